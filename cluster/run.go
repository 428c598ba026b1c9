package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

var registerScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1`)

var unregisterScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1`)

// Join registers the node id, refusing one another live node holds
// (ErrNodeIDInUse; a previous process of this node killed without leaving
// is waited out), and catches up with the events the node missed. With
// Redis unreachable it logs and returns nil: the node serves alone, and Run
// joins once Redis is back.
func (n *Node) Join(ctx context.Context) error {
	n.loadPending()
	if err := n.register(ctx, true); err != nil {
		return err
	}
	if err := n.CatchUp(ctx); err != nil {
		n.log.Warn("cluster: catching up deferred until Redis answers", "err", err)
	}
	return nil
}

// CatchUp applies the events this node missed since its saved position
// (purges made while it was down or cut off), so that it serves none of the
// pages they removed. Call it before serving; with Redis unreachable it
// returns the error and Run catches up once Redis is back. A position older
// than the stream's oldest record (the node missed records trimmed away)
// empties the local cache: what it missed cannot be known.
func (n *Node) CatchUp(ctx context.Context) error {
	pos := n.loadPosition()
	cctx, cancel := n.call(ctx)
	defer cancel()
	if pos == "" {
		// A node new to the cluster starts at the end of the stream.
		last, err := n.rdb.XRevRangeN(cctx, n.keys.events(), "+", "-", 1).Result()
		if n.note(err) != nil {
			return fmt.Errorf("cluster: catch up: %w", err)
		}
		id := "0-0"
		if len(last) == 1 {
			id = last[0].ID
		}
		n.applied.Store(id)
		n.caughtUp.Store(n.opts.Now().UnixNano())
		return n.savePosition(id)
	}
	trimmed, err := n.rdb.Get(cctx, n.keys.trimmed()).Result()
	if n.note(err) != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("cluster: catch up: %w", err)
	}
	if streamIDLess(pos, trimmed) {
		dropped := n.opts.Store.DeleteAll()
		n.log.Warn("cluster: events this node missed were trimmed from the stream: local cache emptied", "entries", dropped)
	}
	n.applied.Store(pos)
	for {
		more, err := n.readOnce(ctx, 0)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// readOnce reads and applies one batch after the applied position, blocking
// up to block (0: not at all); more reports a full batch.
func (n *Node) readOnce(ctx context.Context, block time.Duration) (more bool, err error) {
	pos, _ := n.applied.Load().(string)
	if pos == "" {
		pos = "0-0"
	}
	timeout := n.opts.CallTimeout + block
	cctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	args := &redis.XReadArgs{Streams: []string{n.keys.events(), pos}, Count: 200, Block: block}
	if block == 0 {
		args.Block = -1 // no BLOCK argument
	}
	res, err := n.rdb.XRead(cctx, args).Result()
	if errors.Is(err, redis.Nil) { // nothing after pos: caught up
		n.note(nil)
		n.caughtUp.Store(n.opts.Now().UnixNano())
		return false, nil
	}
	if n.note(err) != nil {
		return false, fmt.Errorf("cluster: read events: %w", err)
	}
	count := 0
	for _, s := range res {
		for _, msg := range s.Messages {
			n.apply(msg)
			pos = msg.ID
			count++
		}
	}
	if count > 0 {
		n.applied.Store(pos)
		if err := n.savePosition(pos); err != nil {
			n.log.Warn("cluster: saving stream position failed", "err", err)
		}
		if err := n.ack(ctx, pos); err != nil {
			return false, err
		}
	}
	if count < 200 {
		n.caughtUp.Store(n.opts.Now().UnixNano())
	}
	return count == 200, nil
}

func (n *Node) ack(ctx context.Context, pos string) error {
	cctx, cancel := n.call(ctx)
	defer cancel()
	return n.note(n.rdb.HSet(cctx, n.keys.acks(), n.opts.NodeID, pos).Err())
}

// Run keeps the node in the cluster until ctx is done, after Join: it beats
// every second (failing with ErrNodeIDInUse if another process took the
// node id meanwhile), applies the event stream, wakes local lock waiters when a lock is
// released anywhere, and delivers purges kept while Redis was unreachable.
// It returns nil at ctx's end, unregistering the node.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() { n.subscribe(ctx) })
	wg.Go(func() {
		if err := n.beat(ctx); err != nil {
			errc <- err
		}
	})
	wg.Go(func() { n.consume(ctx) })
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	wg.Wait()
	n.leave()
	return err
}

// leave unregisters the node, so that purges stop waiting for it.
func (n *Node) leave() {
	cctx, cancel := context.WithTimeout(context.Background(), n.opts.CallTimeout)
	defer cancel()
	_ = unregisterScript.Run(cctx, n.rdb, []string{n.keys.node(n.opts.NodeID), n.keys.nodes()}, n.token, n.opts.NodeID).Err()
}

// register claims the node id, waiting up to liveWindow for a previous
// process's registration to lapse (a node restarted after kill -9). With
// Redis unreachable it returns nil: beat registers later.
func (n *Node) register(ctx context.Context, first bool) error {
	deadline := time.Now().Add(liveWindow + heartbeat)
	for {
		cctx, cancel := n.call(ctx)
		ok, err := registerScript.Run(cctx, n.rdb, []string{n.keys.node(n.opts.NodeID), n.keys.nodes()},
			n.token, liveWindow.Milliseconds(), n.opts.Now().UnixMilli(), n.opts.NodeID).Int()
		cancel()
		switch {
		case n.note(err) != nil:
			if first {
				n.log.Warn("cluster: Redis unreachable at start: serving alone until it is back", "err", err)
			}
			return nil
		case ok == 1:
			return nil
		case !first || time.Now().After(deadline):
			return fmt.Errorf("%w: %q (give each node its own cluster.node_id)", ErrNodeIDInUse, n.opts.NodeID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// trimStreamScript removes up to ARGV[2] of the oldest events beyond
// ARGV[1], and records the newest id removed in KEYS[2]: a node whose
// saved position is older missed events it can no longer read. (Exact
// deletes rather than XTRIM ~, whose cut point is unknown; and MAXLEN on
// XADD would trim without telling.)
var trimStreamScript = redis.NewScript(`
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[2])))
local ids = {}
for i, e in ipairs(old) do ids[i] = e[1] end
redis.call('XDEL', KEYS[1], unpack(ids))
redis.call('SET', KEYS[2], ids[#ids])
return #ids`)

// trimStream keeps the event stream near streamMax records.
func (n *Node) trimStream(ctx context.Context) {
	cctx, cancel := n.call(ctx)
	defer cancel()
	n.note(trimStreamScript.Run(cctx, n.rdb, []string{n.keys.events(), n.keys.trimmed()}, n.streamMax, 1000).Err())
}

// trimEvery is how many heartbeats pass between index trims.
const trimEvery = 30

// beat renews the registration every heartbeat and delivers kept purges.
func (n *Node) beat(ctx context.Context) error {
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	wasUp := n.up.Load()
	for beats := 0; ; beats++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := n.register(ctx, false); err != nil {
			return err
		}
		up := n.up.Load()
		if up && !wasUp {
			n.log.Info("cluster: Redis reachable again")
		}
		wasUp = up
		if up {
			n.flushPending(ctx)
			n.renewClaims(ctx)
			n.publishStats(ctx)
			n.trimStream(ctx)
			if beats%trimEvery == 0 {
				n.trimIndexes(ctx)
			}
		}
	}
}

// flushPending delivers the purges made while Redis was unreachable.
func (n *Node) flushPending(ctx context.Context) {
	n.mu.Lock()
	evs := n.pending
	n.pending = nil
	n.mu.Unlock()
	for i, ev := range evs {
		if _, err := n.deliver(ctx, ev); err != nil {
			n.mu.Lock()
			n.pending = append(evs[i:], n.pending...)
			n.mu.Unlock()
			return
		}
		n.log.Info("cluster: purge made while Redis was unreachable delivered")
	}
	if len(evs) > 0 {
		n.mu.Lock()
		n.savePendingLocked()
		n.mu.Unlock()
	}
}

// consume applies the event stream as it grows.
func (n *Node) consume(ctx context.Context) {
	caughtUp := false
	for ctx.Err() == nil {
		if !caughtUp {
			if err := n.CatchUp(ctx); err != nil {
				sleep(ctx, time.Second)
				continue
			}
			caughtUp = true
		}
		if _, err := n.readOnce(ctx, time.Second); err != nil && ctx.Err() == nil {
			n.log.Debug("cluster: event stream", "err", err)
			caughtUp = false // check for trimmed events again once Redis answers
			sleep(ctx, 500*time.Millisecond)
		}
	}
}

// subscribe wakes local Lock calls when any node releases a lock.
func (n *Node) subscribe(ctx context.Context) {
	for ctx.Err() == nil {
		ps := n.rdb.Subscribe(ctx, n.keys.released())
		ch := ps.Channel()
	recv:
		for {
			select {
			case <-ctx.Done():
				break recv
			case m, ok := <-ch:
				if !ok {
					break recv
				}
				n.wake(m.Payload)
			}
		}
		ps.Close()
		sleep(ctx, 500*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// CheckRedis reports Redis settings unsafe for PRISM: no persistence (a
// restart loses queued purges and the shared tier) and an eviction policy
// that may drop locks, queues or the stream.
func (n *Node) CheckRedis(ctx context.Context) []string {
	cctx, cancel := n.call(ctx)
	defer cancel()
	var warns []string
	if v, err := n.rdb.ConfigGet(cctx, "appendonly").Result(); n.note(err) == nil && v["appendonly"] != "yes" {
		warns = append(warns, "Redis runs without appendonly yes: a Redis restart loses the shared cache and undelivered purge events")
	}
	if v, err := n.rdb.ConfigGet(cctx, "maxmemory-policy").Result(); n.note(err) == nil {
		if p := v["maxmemory-policy"]; p != "" && p != "noeviction" && !strings.HasPrefix(p, "volatile-") {
			warns = append(warns, "Redis maxmemory-policy is "+strconv.Quote(p)+": it may evict locks and the event stream; use noeviction or a volatile-* policy")
		}
	}
	return warns
}

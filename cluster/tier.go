package cluster

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
)

var _ fill.Cluster = (*Node)(nil)

// Lookup returns the cluster's copy of k, or nil when there is none, it does
// not decode, or Redis does not answer within CallTimeout. Callers ask only
// after a local miss: a local hit never reaches Redis.
func (n *Node) Lookup(ctx context.Context, k cachestore.Key) *cachestore.Entry {
	if n.down() {
		n.m.sharedError.Inc()
		return nil
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	b, err := n.rdb.Get(cctx, n.keys.entry(hash(k))).Bytes()
	if n.note(err) != nil {
		if errors.Is(err, redis.Nil) {
			n.m.sharedMiss.Inc()
		} else {
			n.m.sharedError.Inc()
			n.log.Debug("cluster: lookup failed", "key", k.String(), "err", err)
		}
		return nil
	}
	e, err := cachestore.Unmarshal(b, n.opts.MaxEntryBytes)
	if err != nil || e.Key != k {
		n.m.sharedError.Inc()
		n.log.Warn("cluster: shared entry refused", "key", k.String(), "err", err)
		return nil
	}
	n.m.sharedHit.Inc()
	return e
}

// down reports whether the last Redis call failed. Calls on a request's
// path (Lookup, Lock, Release) are then skipped rather than each waiting
// up to CallTimeout; the heartbeat tries Redis every second and clears it.
func (n *Node) down() bool { return !n.up.Load() }

// Lease is a render lock held by this node (or, when Redis could not be
// reached, a stand-in that holds nothing: the node renders alone).
type Lease struct {
	n      *Node
	k      cachestore.Key
	h      string
	epoch  string // the purge epoch when the lock was taken
	held   bool
	waited bool // another node held the lock first
	stop   context.CancelFunc
	done   chan struct{} // closed when the renewal goroutine ends
}

// Waited reports whether another node held the lock before this one got it:
// it may have stored the page meanwhile.
func (l *Lease) Waited() bool { return l.waited }

var acquireScript = redis.NewScript(`
local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local ep = redis.call('GET', KEYS[2]) or '0'
if ok then return {1, ep} end
return {0, ep}`)

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0`)

// publishScript stores an entry unless a purge ran since its render's lock
// was taken (the epoch moved), indexes it by render time and by URL, and
// tells the other nodes.
var publishScript = redis.NewScript(`
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[5], 0, ARGV[8])
redis.call('XADD', KEYS[4], '*', 't', 'fill', 'n', ARGV[6], 'k', ARGV[4], 'at', ARGV[7])
return 1`)

// streamMax bounds the event stream: the heartbeats trim it (trimStream).
const streamMax = 100000

// Lock takes k's cluster-wide render lock, waiting while another node holds
// it: woken when the holder releases it, and taking it over when the
// holder's lease lapses (a dead holder costs at most the lease plus one poll).
// When Redis does not answer it returns a Lease that holds nothing, at once:
// the node renders without the cluster rather than fail. Its error is ctx's.
// The caller must Release the Lease.
func (n *Node) Lock(ctx context.Context, k cachestore.Key) (fill.Lease, error) {
	l := &Lease{n: n, k: k, h: hash(k)}
	lease := n.opts.LockLease
	poll := min(lease/4, 250*time.Millisecond)
	released := false
	if n.down() {
		n.m.lockLocal.Inc()
		return l, nil
	}
	for {
		wake := n.wait(l.h)
		cctx, cancel := n.call(ctx)
		res, err := acquireScript.Run(cctx, n.rdb, []string{n.keys.lock(l.h), n.keys.epoch()}, n.token, lease.Milliseconds()).Slice()
		cancel()
		if n.note(err) != nil || len(res) != 2 {
			n.unwait(l.h, wake)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			n.m.lockLocal.Inc()
			n.log.Debug("cluster: render lock unavailable, rendering locally", "key", k.String(), "err", err)
			return l, nil
		}
		l.epoch, _ = res[1].(string)
		if ok, _ := res[0].(int64); ok == 1 {
			n.unwait(l.h, wake)
			l.held = true
			switch {
			case !l.waited:
				n.m.lockAcquired.Inc()
			case released:
				n.m.lockWaited.Inc()
			default:
				n.m.lockTakenOver.Inc()
			}
			rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
			l.stop, l.done = stop, make(chan struct{})
			go l.renew(rctx)
			return l, nil
		}
		l.waited = true
		n.m.lockBusy.Inc()
		t := time.NewTimer(poll)
		select {
		case <-wake:
			released = true
		case <-t.C:
			released = false
		case <-ctx.Done():
			t.Stop()
			n.unwait(l.h, wake)
			return nil, ctx.Err()
		}
		t.Stop()
		n.unwait(l.h, wake)
	}
}

// renew extends the lease every third of it until Release.
func (l *Lease) renew(ctx context.Context) {
	defer close(l.done)
	lease := l.n.opts.LockLease
	t := time.NewTicker(lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := l.n.call(ctx)
			ok, err := renewScript.Run(cctx, l.n.rdb, []string{l.n.keys.lock(l.h)}, l.n.token, lease.Milliseconds()).Int()
			cancel()
			if l.n.note(err) == nil && ok == 0 {
				l.n.log.Warn("cluster: render lock lost while rendering (lease lapsed)", "key", l.k.String())
			}
		}
	}
}

// Release publishes e (when not nil) to the cluster, unless a purge ran
// since the lock was taken, and releases the lock, waking the nodes that
// wait for it. A Lease that holds nothing publishes nothing: without the
// epoch its lock would have recorded, a purge that ran during the render
// could not be told, and the page stays on this node.
func (l *Lease) Release(ctx context.Context, e *cachestore.Entry) {
	n := l.n
	if !l.held {
		return
	}
	l.stop()
	<-l.done
	if n.down() {
		return // the lock lapses with its lease; the page stays here
	}
	if e != nil {
		n.publish(ctx, e, l.epoch)
	}
	cctx, cancel := n.call(context.WithoutCancel(ctx))
	defer cancel()
	err := releaseScript.Run(cctx, n.rdb, []string{n.keys.lock(l.h), n.keys.released()}, n.token, l.h).Err()
	if n.note(err) != nil {
		n.log.Debug("cluster: lock release failed (it lapses with its lease)", "key", l.k.String(), "err", err)
	}
}

// publish stores e in the shared tier unless the purge epoch moved from
// epoch (the one seen when the render's lock was taken).
func (n *Node) publish(ctx context.Context, e *cachestore.Entry, epoch string) {
	b, err := cachestore.Marshal(e)
	if err != nil {
		n.log.Warn("cluster: entry not published", "key", e.Key.String(), "err", err)
		return
	}
	ttl := n.opts.MaxAge - n.opts.Now().Sub(e.RenderedAt)
	if ttl < time.Second {
		return
	}
	m := member(e.Key)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*n.opts.CallTimeout) // bodies are larger than commands
	defer cancel()
	ok, err := publishScript.Run(cctx, n.rdb,
		[]string{n.keys.entry(hash(e.Key)), n.keys.index(e.Key.HostID), n.keys.epoch(), n.keys.events(), n.keys.urls(e.Key.HostID)},
		b, ttl.Milliseconds(), epoch, m, e.RenderedAt.UnixMilli(), n.opts.NodeID,
		strconv.FormatInt(e.RenderedAt.UnixMilli(), 10), urlMember(e.Key)).Int()
	switch {
	case n.note(err) != nil:
		n.log.Debug("cluster: publish failed", "key", e.Key.String(), "err", err)
	case ok == 0:
		n.m.refused.Inc()
		n.log.Info("cluster: render not published: a purge ran while it rendered", "key", e.Key.String())
	default:
		n.m.published.Inc()
	}
}

// wait registers a channel closed when the lock with hash h is released.
func (n *Node) wait(h string) chan struct{} {
	ch := make(chan struct{})
	n.mu.Lock()
	n.waiters[h] = append(n.waiters[h], ch)
	n.mu.Unlock()
	return ch
}

func (n *Node) unwait(h string, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ws := n.waiters[h]
	for i, c := range ws {
		if c == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(n.waiters, h)
	} else {
		n.waiters[h] = ws
	}
}

// wake closes the channels of Lock calls waiting for h.
func (n *Node) wake(h string) {
	n.mu.Lock()
	ws := n.waiters[h]
	delete(n.waiters, h)
	n.mu.Unlock()
	for _, c := range ws {
		close(c)
	}
}

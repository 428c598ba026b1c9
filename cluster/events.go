package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/recache"
)

// Purge is what a purge removes. Exactly one of Keys, Glob or All is set.
type Purge struct {
	Keys []cachestore.Key
	// Glob is a /purge/pattern glob over URL paths (cachestore.NewPattern),
	// for HostID's keys (0: every host).
	Glob   string
	HostID int
	All    bool
}

// PurgeResult says how far a purge reached.
type PurgeResult struct {
	// Applied counts the live nodes (this one included) that applied the
	// purge before Purge returned; Live the nodes with a recent heartbeat.
	Applied, Live int
	// Pending is true when Redis could not be reached: the purge applied
	// here and will be delivered to the cluster once Redis is back.
	Pending bool
}

// event is one record of the event stream.
type event struct {
	Type   string   `json:"t"`           // "purge" or "fill"
	Node   string   `json:"n"`           // the node that made it
	Keys   []string `json:"k,omitempty"` // members
	Glob   string   `json:"g,omitempty"`
	HostID int      `json:"h,omitempty"`
	All    bool     `json:"a,omitempty"`
}

const (
	heartbeat  = time.Second
	liveWindow = 3 * heartbeat // a node silent this long is not live
	batchSize  = 500           // keys per Redis round trip of a large purge
	// scanBatch is the members read per call of a glob purge: well under a
	// millisecond of Redis time each (bench/run.sh cluster).
	scanBatch = 2000
)

// Purge removes p's pages from the shared tier and delivers p to every node
// through the event stream, then waits up to PurgeWait for the live nodes
// to apply it. The caller has already applied p to this node's store. Renders
// that took their lock before the purge are kept out of the shared tier
// (the epoch moves first). With Redis unreachable the purge is kept and
// delivered by Run when Redis is back (Pending).
func (n *Node) Purge(ctx context.Context, p Purge) PurgeResult {
	ev := event{Type: "purge", Node: n.opts.NodeID, Glob: p.Glob, HostID: p.HostID, All: p.All}
	for _, k := range p.Keys {
		ev.Keys = append(ev.Keys, member(k))
	}
	id, err := n.deliver(ctx, ev)
	if err != nil {
		n.log.Warn("cluster: purge kept for delivery when Redis is back", "err", err)
		n.keepPending(ev)
		return PurgeResult{Applied: 1, Live: 1, Pending: true}
	}
	return n.awaitAcks(ctx, id)
}

// deliver moves the epoch, removes ev's pages from the shared tier and
// appends ev to the stream, returning its id.
func (n *Node) deliver(ctx context.Context, ev event) (string, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return "", err
	}
	cctx, cancel := n.call(ctx)
	err = n.note(n.rdb.Incr(cctx, n.keys.epoch()).Err())
	cancel()
	if err != nil {
		return "", fmt.Errorf("cluster: purge epoch: %w", err)
	}
	if err := n.removeShared(ctx, ev); err != nil {
		return "", err
	}
	cctx, cancel = n.call(ctx) // a large purge's removal took its own calls
	defer cancel()
	id, err := n.rdb.XAdd(cctx, &redis.XAddArgs{
		Stream: n.keys.events(),
		Values: []any{"t", ev.Type, "n", ev.Node, "p", body},
	}).Result()
	if n.note(err) != nil {
		return "", fmt.Errorf("cluster: purge event: %w", err)
	}
	return id, nil
}

// removeShared deletes ev's pages from the shared tier: named keys at once,
// globs and purge-all through each host's index in chunks of batchSize, so
// Redis is never blocked for long.
func (n *Node) removeShared(ctx context.Context, ev event) error {
	if len(ev.Keys) > 0 {
		for i := 0; i < len(ev.Keys); i += batchSize {
			if err := n.removeMembers(ctx, ev.Keys[i:min(i+batchSize, len(ev.Keys))]); err != nil {
				return err
			}
		}
		return nil
	}
	var match func(cachestore.Key) bool
	prefix := "" // every URL match selects starts with it
	hosts := n.opts.HostIDs
	switch {
	case ev.All:
		match = func(cachestore.Key) bool { return true }
	case ev.Glob != "":
		pat, err := cachestore.NewPattern(ev.HostID, ev.Glob)
		if err != nil {
			return fmt.Errorf("cluster: purge pattern: %w", err)
		}
		match, prefix = pat.Match, pat.Prefix()
		if ev.HostID != 0 {
			hosts = []int{ev.HostID}
		}
	default:
		return nil
	}
	for _, h := range hosts {
		// The URL index from the glob's literal prefix on, in chunks:
		// O(log N + chunk) per call, never a scan of the whole index for
		// a pattern with a prefix.
		lo, hi := "-", "+"
		if prefix != "" {
			lo, hi = "["+prefix, "("+prefix+"\xff"
		}
		for {
			cctx, cancel := n.call(ctx)
			ms, err := n.rdb.ZRangeByLex(cctx, n.keys.urls(h), &redis.ZRangeBy{Min: lo, Max: hi, Count: scanBatch}).Result()
			cancel()
			if n.note(err) != nil {
				return fmt.Errorf("cluster: purge scan: %w", err)
			}
			var doomed []string
			for _, m := range ms {
				if k, ok := parseURLMember(h, m); ok && match(k) {
					doomed = append(doomed, member(k))
				}
			}
			if err := n.removeMembers(ctx, doomed); err != nil {
				return err
			}
			if len(ms) < scanBatch {
				break
			}
			lo = "(" + ms[len(ms)-1]
		}
	}
	return nil
}

// trimScript drops up to 1000 index members of entries expired by ARGV[1]
// (ms): their entry keys lapsed by themselves. KEYS: the time index, the
// URL index.
var trimScript = redis.NewScript(`
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, m in ipairs(ms) do
  redis.call('ZREM', KEYS[1], m)
  local d, u = string.match(m, '^%d+:(%d+):(.*)$')
  if d then redis.call('ZREM', KEYS[2], u .. '\0' .. d) end
end
return #ms`)

// trimIndexes removes the index members of shared entries past MaxAge, a
// bounded batch per host per call.
func (n *Node) trimIndexes(ctx context.Context) {
	cutoff := n.opts.Now().Add(-n.opts.MaxAge).UnixMilli()
	for _, h := range n.opts.HostIDs {
		cctx, cancel := n.call(ctx)
		err := trimScript.Run(cctx, n.rdb, []string{n.keys.index(h), n.keys.urls(h)}, cutoff).Err()
		cancel()
		if n.note(err) != nil {
			return
		}
	}
}

func (n *Node) removeMembers(ctx context.Context, ms []string) error {
	if len(ms) == 0 {
		return nil
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	pipe := n.rdb.Pipeline()
	for _, m := range ms {
		k, ok := parseMember(m)
		if !ok {
			continue
		}
		pipe.Del(cctx, n.keys.entry(hash(k)))
		pipe.ZRem(cctx, n.keys.index(k.HostID), m)
		pipe.ZRem(cctx, n.keys.urls(k.HostID), urlMember(k))
	}
	_, err := pipe.Exec(cctx)
	if n.note(err) != nil {
		return fmt.Errorf("cluster: purge: %w", err)
	}
	return nil
}

// awaitAcks waits until every live node applied the event id, or PurgeWait.
func (n *Node) awaitAcks(ctx context.Context, id string) PurgeResult {
	deadline := time.Now().Add(n.opts.PurgeWait)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		applied, live, err := n.acked(ctx, id)
		if err == nil && applied >= live || time.Now().After(deadline) || ctx.Err() != nil {
			return PurgeResult{Applied: max(applied, 1), Live: max(live, 1)}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// acked counts the live nodes whose applied position reached id (this node
// counts: its caller applied the purge).
func (n *Node) acked(ctx context.Context, id string) (applied, live int, err error) {
	nodes, err := n.liveNodes(ctx)
	if err != nil {
		return 0, 0, err
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	acks, err := n.rdb.HGetAll(cctx, n.keys.acks()).Result()
	if n.note(err) != nil {
		return 0, 0, err
	}
	for _, node := range nodes {
		live++
		if node == n.opts.NodeID || !streamIDLess(acks[node], id) {
			applied++
		}
	}
	return applied, live, nil
}

// liveNodes returns the ids of the nodes with a recent heartbeat.
func (n *Node) liveNodes(ctx context.Context) ([]string, error) {
	cctx, cancel := n.call(ctx)
	defer cancel()
	since := strconv.FormatInt(n.opts.Now().Add(-liveWindow).UnixMilli(), 10)
	ids, err := n.rdb.ZRangeByScore(cctx, n.keys.nodes(), &redis.ZRangeBy{Min: since, Max: "+inf"}).Result()
	return ids, n.note(err)
}

// streamIDLess compares stream ids "ms-seq"; "" is before everything.
func streamIDLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return am < bm
	}
	return as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// lag is how long ago this node last knew it had applied every event: 0 to
// about a second while it reads the stream, growing while Redis is
// unreachable.
func (n *Node) lag() time.Duration {
	return max(n.opts.Now().Sub(time.Unix(0, n.caughtUp.Load())), 0)
}

// apply carries out one stream record on this node's store.
func (n *Node) apply(msg redis.XMessage) {
	typ, _ := msg.Values["t"].(string)
	from, _ := msg.Values["n"].(string)
	if from == n.opts.NodeID {
		return // applied when it was made
	}
	switch typ {
	case "fill":
		k, ok := parseMember(str(msg.Values["k"]))
		at, err := strconv.ParseInt(str(msg.Values["at"]), 10, 64)
		if !ok || err != nil {
			return
		}
		// A newer render elsewhere: drop the local copy, and the next
		// request takes the new one from the shared tier.
		if e, ok := n.opts.Store.Get(k); ok && e.RenderedAt.UnixMilli() < at {
			n.opts.Store.Delete(k)
		}
	case "warmed":
		if k, ok := parseMember(str(msg.Values["k"])); ok {
			var err error
			if e := str(msg.Values["e"]); e != "" {
				err = warmError(e)
			}
			n.tellWarmed(k, err)
		}
	case "purge":
		var ev event
		if err := json.Unmarshal([]byte(str(msg.Values["p"])), &ev); err != nil {
			n.log.Warn("cluster: bad purge event skipped", "id", msg.ID, "err", err)
			return
		}
		n.applyPurge(ev)
	}
	n.m.eventsApplied.Inc()
}

func (n *Node) applyPurge(ev event) int {
	s := n.opts.Store
	switch {
	case ev.All:
		return s.DeleteAll()
	case ev.Glob != "":
		pat, err := cachestore.NewPattern(ev.HostID, ev.Glob)
		if err != nil {
			return 0
		}
		return s.DeleteFunc(pat.Match)
	}
	c := 0
	for _, m := range ev.Keys {
		if k, ok := parseMember(m); ok && s.Delete(k) {
			c++
		}
	}
	return c
}

// warmError turns a warm render's announced error back into an error,
// recache.ErrNotStored as itself.
func warmError(msg string) error {
	if msg == recache.ErrNotStored.Error() {
		return recache.ErrNotStored
	}
	return errors.New(msg)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// positionFile holds the last stream id this node applied.
func (n *Node) positionFile() string { return filepath.Join(n.opts.StateDir, "cluster-position") }

func (n *Node) loadPosition() string {
	b, err := os.ReadFile(n.positionFile())
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	ms, seq, ok := strings.Cut(id, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil || !ok {
		return "" // not a position: start as a new node
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return ""
	}
	return id
}

func (n *Node) savePosition(id string) error {
	tmp := n.positionFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, n.positionFile())
}

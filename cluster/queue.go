package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
)

// The shared recache queues: the internal API's high and normal levels, per
// host, as sorted sets of members scored by due time (ms). A node's
// scheduler pushes what it accepted (after journaling it locally) and
// claims what its free recache tabs can take. A claim is a member of the
// claims set scored by its lease's end; the claiming node renews it every
// heartbeat while the render runs, and any node returns lapsed claims (their
// node died) to their queue. Autorecache stays on each node: every node
// refreshes what it stores, and the render lock and fill events keep that
// to one render per page cluster-wide.

// pushScript queues members at one level, keeping the earlier due time; a
// high push supersedes a normal entry and a normal push yields to a high
// one; warm entries (level 3) have their own queue. KEYS: the high, normal
// and warm queue of each host, in triples; ARGV: level, then (host slot,
// due ms, member) triples.
var pushScript = redis.NewScript(`
local lvl = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local slot = tonumber(ARGV[i])
  local hi, no, wa = KEYS[3*slot-2], KEYS[3*slot-1], KEYS[3*slot]
  local m = ARGV[i+2]
  if lvl == 1 then
    redis.call('ZREM', no, m)
    redis.call('ZADD', hi, 'LT', ARGV[i+1], m)
  elseif lvl == 3 then
    redis.call('ZADD', wa, 'LT', ARGV[i+1], m)
  elseif not redis.call('ZSCORE', hi, m) then
    redis.call('ZADD', no, 'LT', ARGV[i+1], m)
  end
end
return 1`)

// claimScript claims up to ARGV[2] due members, high before normal before
// warm, round-robin across hosts within a level. KEYS: claims, attempts,
// paused, then every host's high queue, then every host's normal queue,
// then every host's warm queue; ARGV: now ms, n, lease end ms, host count,
// start slot. It returns {paused} or {0, claim, attempts, ...}.
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return {1} end
local now, n, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local nh, start = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {0}
local got = 0
for lvl = 0, 2 do
  local progress = true
  while got < n and progress do
    progress = false
    for i = 0, nh - 1 do
      if got >= n then break end
      local key = KEYS[4 + lvl*nh + ((start + i) % nh)]
      local m = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1)
      if #m == 1 then
        redis.call('ZREM', key, m[1])
        local c = (lvl + 1) .. '|' .. m[1]
        redis.call('ZADD', KEYS[1], lease, c)
        table.insert(out, c)
        table.insert(out, redis.call('HGET', KEYS[2], c) or '0')
        got = got + 1
        progress = true
      end
    end
  end
end
return out`)

// finishScript settles a claim still held (a lapsed one returned to the
// queue is left alone): done (ARGV[2] = "") or back in its queue KEYS[3] at
// due ARGV[2] with ARGV[3] attempts. KEYS: claims, attempts, queue.
var finishScript = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local m = string.sub(ARGV[1], 3)
redis.call('ZADD', KEYS[3], 'LT', ARGV[2], m)
return 1`)

// reapScript returns up to 100 lapsed claims to their queues, due now.
// KEYS: claims; ARGV: now ms, queue key prefix.
var reapScript = redis.NewScript(`
local cs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, c in ipairs(cs) do
  local lvl, m = string.match(c, '^(%d)|(.*)$')
  local host = m and string.match(m, '^(%d+):')
  redis.call('ZREM', KEYS[1], c)
  if host then
    redis.call('ZADD', ARGV[2] .. host .. ':' .. lvl, 'LT', ARGV[1], m)
  end
end
return #cs`)

func (p keyspace) queue(host int, level recache.Priority) string {
	return string(p) + "q:" + strconv.Itoa(host) + ":" + strconv.Itoa(int(level))
}
func (p keyspace) queuePrefix() string   { return string(p) + "q:" }
func (p keyspace) claims() string        { return string(p) + "claims" }
func (p keyspace) attempts() string      { return string(p) + "attempts" }
func (p keyspace) paused() string        { return string(p) + "paused" }
func (p keyspace) stat(id string) string { return string(p) + "stat:" + id }
func (p keyspace) claimCursor() string   { return string(p) + "qcursor" }

// hostSlots returns the configured hosts' queue keys, high, normal and
// warm in triples, and each host's slot (1-based triple index).
func (n *Node) hostSlots() (keys []string, slot map[int]int) {
	slot = make(map[int]int, len(n.opts.HostIDs))
	for i, id := range n.opts.HostIDs {
		keys = append(keys, n.keys.queue(id, recache.High), n.keys.queue(id, recache.Normal), n.keys.queue(id, recache.Auto))
		slot[id] = i + 1
	}
	return keys, slot
}

// Push queues keys at level p, due at due, in the shared queues: High and
// Normal for the internal API's recaches, Auto for warmups (a node's
// periodic autorecache stays local). Keys of hosts this node does not know
// are refused. It implements recache.Shared.
func (n *Node) Push(ctx context.Context, keys []cachestore.Key, p recache.Priority, due time.Time) error {
	if p != recache.High && p != recache.Normal && p != recache.Auto {
		return fmt.Errorf("cluster: push: invalid level %d", int(p))
	}
	qkeys, slot := n.hostSlots()
	const batch = 300
	for i := 0; i < len(keys); i += batch {
		args := []any{int(p)}
		for _, k := range keys[i:min(i+batch, len(keys))] {
			s, ok := slot[k.HostID]
			if !ok {
				return fmt.Errorf("cluster: push: host %d not configured", k.HostID)
			}
			args = append(args, s, due.UnixMilli(), member(k))
		}
		cctx, cancel := n.call(ctx)
		err := pushScript.Run(cctx, n.rdb, qkeys, args...).Err()
		cancel()
		if n.note(err) != nil {
			return fmt.Errorf("cluster: push: %w", err)
		}
	}
	return nil
}

// Claim takes up to max due entries from the shared queues for this node,
// with a lease the node renews while they render. paused reports a
// cluster-wide pause (nothing is claimed). It implements recache.Shared.
func (n *Node) Claim(ctx context.Context, max int) (claims []recache.Claim, paused bool, err error) {
	if max <= 0 || len(n.opts.HostIDs) == 0 {
		paused, err = n.sharedPaused(ctx)
		return nil, paused, err
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	start, err := n.rdb.Incr(cctx, n.keys.claimCursor()).Result()
	if n.note(err) != nil {
		return nil, false, fmt.Errorf("cluster: claim: %w", err)
	}
	keys := []string{n.keys.claims(), n.keys.attempts(), n.keys.paused()}
	for _, p := range []recache.Priority{recache.High, recache.Normal, recache.Auto} {
		for _, id := range n.opts.HostIDs {
			keys = append(keys, n.keys.queue(id, p))
		}
	}
	now := n.opts.Now()
	res, err := claimScript.Run(cctx, n.rdb, keys, now.UnixMilli(), max,
		now.Add(n.opts.ClaimLease).UnixMilli(), len(n.opts.HostIDs), start%int64(len(n.opts.HostIDs))).Slice()
	if n.note(err) != nil {
		return nil, false, fmt.Errorf("cluster: claim: %w", err)
	}
	if len(res) == 0 || res[0] != int64(0) {
		return nil, true, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := 1; i+1 < len(res); i += 2 {
		c, _ := res[i].(string)
		a, _ := res[i+1].(string)
		lvl, m, _ := strings.Cut(c, "|")
		k, ok := parseMember(m)
		p, _ := strconv.Atoi(lvl)
		attempts, _ := strconv.Atoi(a)
		if !ok {
			n.log.Warn("cluster: dropping a malformed shared queue entry", "entry", clipString(c))
			n.finishLocked(ctx, c, time.Time{}, 0)
			continue
		}
		n.claims[c] = struct{}{}
		claims = append(claims, recache.Claim{ID: c, Key: k, Priority: recache.Priority(p), Attempts: attempts})
		n.m.claimed.Inc()
	}
	return claims, false, nil
}

// Finish settles a claim: done when retryAt is zero, else back in the
// shared queue due at retryAt after attempts failed renders. A warm claim
// done is announced to every node with result (nil: stored), for the
// warmup waiting for it. It implements recache.Shared.
func (n *Node) Finish(ctx context.Context, c recache.Claim, retryAt time.Time, attempts int, result error) error {
	n.mu.Lock()
	delete(n.claims, c.ID)
	n.mu.Unlock()
	if err := n.finishLocked(ctx, c.ID, retryAt, attempts); err != nil {
		return err
	}
	if c.Priority == recache.Auto && retryAt.IsZero() {
		n.announceWarmed(ctx, c.Key, result)
	}
	return nil
}

// Remove drops keys from the shared queue at level p (a cancelled warmup's
// keys). It implements recache.Shared.
func (n *Node) Remove(ctx context.Context, keys []cachestore.Key, p recache.Priority) error {
	cctx, cancel := n.call(ctx)
	defer cancel()
	pipe := n.rdb.Pipeline()
	for _, k := range keys {
		pipe.ZRem(cctx, n.keys.queue(k.HostID, p), member(k))
	}
	_, err := pipe.Exec(cctx)
	if n.note(err) != nil {
		return fmt.Errorf("cluster: remove: %w", err)
	}
	return nil
}

// OnWarmed sets the function told of every warm render settled anywhere in
// the cluster (key, and nil or its error). It implements recache.Shared;
// call it before Run.
func (n *Node) OnWarmed(f func(cachestore.Key, error)) { n.warmed.Store(&f) }

func (n *Node) tellWarmed(k cachestore.Key, err error) {
	if f := n.warmed.Load(); f != nil {
		(*f)(k, err)
	}
}

// announceWarmed tells every node (this one at once, the others through
// the event stream) that a warm render of k settled.
func (n *Node) announceWarmed(ctx context.Context, k cachestore.Key, result error) {
	n.tellWarmed(k, result)
	msg := ""
	if result != nil {
		msg = result.Error()
	}
	cctx, cancel := n.call(context.WithoutCancel(ctx))
	defer cancel()
	err := n.rdb.XAdd(cctx, &redis.XAddArgs{
		Stream: n.keys.events(),
		Values: []any{"t", "warmed", "n", n.opts.NodeID, "k", member(k), "e", msg},
	}).Err()
	if n.note(err) != nil {
		n.log.Warn("cluster: a warm render's result was not announced: its warmup waits for it", "key", k.String(), "err", err)
	}
}

// finishLocked runs finishScript; it makes one Redis call and does not need
// n.mu (the name says callers may hold it).
func (n *Node) finishLocked(ctx context.Context, id string, retryAt time.Time, attempts int) error {
	lvl, m, _ := strings.Cut(id, "|")
	k, _ := parseMember(m)
	p, _ := strconv.Atoi(lvl)
	due := ""
	if !retryAt.IsZero() {
		due = strconv.FormatInt(retryAt.UnixMilli(), 10)
	}
	cctx, cancel := n.call(context.WithoutCancel(ctx))
	defer cancel()
	err := finishScript.Run(cctx, n.rdb, []string{n.keys.claims(), n.keys.attempts(), n.keys.queue(k.HostID, recache.Priority(p))},
		id, due, attempts).Err()
	if n.note(err) != nil {
		return fmt.Errorf("cluster: finish claim: %w", err)
	}
	return nil
}

// SetPaused pauses or resumes recache dispatch on every node. It implements
// recache.Shared.
func (n *Node) SetPaused(ctx context.Context, paused bool) error {
	cctx, cancel := n.call(ctx)
	defer cancel()
	var err error
	if paused {
		err = n.rdb.Set(cctx, n.keys.paused(), n.opts.NodeID, 0).Err()
	} else {
		err = n.rdb.Del(cctx, n.keys.paused()).Err()
	}
	if n.note(err) != nil {
		return fmt.Errorf("cluster: set paused: %w", err)
	}
	return nil
}

func (n *Node) sharedPaused(ctx context.Context) (bool, error) {
	cctx, cancel := n.call(ctx)
	defer cancel()
	c, err := n.rdb.Exists(cctx, n.keys.paused()).Result()
	if n.note(err) != nil {
		return false, fmt.Errorf("cluster: paused: %w", err)
	}
	return c == 1, nil
}

// renewClaims extends the leases of the claims this node holds, and returns
// lapsed claims of any node to their queues.
func (n *Node) renewClaims(ctx context.Context) {
	n.mu.Lock()
	ids := make([]string, 0, len(n.claims))
	for id := range n.claims {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	now := n.opts.Now()
	cctx, cancel := n.call(ctx)
	defer cancel()
	if len(ids) > 0 {
		zs := make([]redis.Z, len(ids))
		for i, id := range ids {
			zs[i] = redis.Z{Score: float64(now.Add(n.opts.ClaimLease).UnixMilli()), Member: id}
		}
		if n.note(n.rdb.ZAddXX(cctx, n.keys.claims(), zs...).Err()) != nil {
			return
		}
	}
	back, err := reapScript.Run(cctx, n.rdb, []string{n.keys.claims()}, now.UnixMilli(), n.keys.queuePrefix()).Int()
	if n.note(err) == nil && back > 0 {
		n.m.reaped.Add(back)
		n.log.Warn("cluster: recache claims of a node that stopped renewing them returned to the queue", "claims", back)
	}
}

// NodeStats is what a node reports of itself in its heartbeat, for the
// cluster-wide internal /status.
type NodeStats struct {
	Capacity      prerender.Capacity    `json:"capacity"`
	InternalQueue int                   `json:"internal_queue"`
	QueueMax      int                   `json:"queue_max"`
	Auto          map[int]QueueCount    `json:"auto"`            // this node's autorecache queue per host
	Local         map[int][2]QueueCount `json:"local,omitempty"` // high and normal entries not yet shared
}

// NewNodeStats builds what a node reports from its scheduler's status and
// its tabs.
func NewNodeStats(st recache.Status, c prerender.Capacity) NodeStats {
	ns := NodeStats{Capacity: c, InternalQueue: st.InternalQueue, QueueMax: st.InternalQueueMax,
		Auto: make(map[int]QueueCount, len(st.Hosts))}
	for id, hs := range st.Hosts {
		ns.Auto[id] = QueueCount{hs.Auto.Total, hs.Auto.DueNow}
		if hs.High.Total+hs.Normal.Total > 0 {
			if ns.Local == nil {
				ns.Local = map[int][2]QueueCount{}
			}
			ns.Local[id] = [2]QueueCount{{hs.High.Total, hs.High.DueNow}, {hs.Normal.Total, hs.Normal.DueNow}}
		}
	}
	return ns
}

// QueueCount is one queue's size.
type QueueCount struct {
	Total  int `json:"total"`
	DueNow int `json:"due_now"`
}

// Status is the cluster-wide view of the recache queues and tabs.
type Status struct {
	Nodes   []string // live node ids
	Paused  bool
	Claimed int // shared entries being rendered
	// Capacity sums the live nodes' tabs (ReservationPercent is left 0:
	// each node has its own).
	Capacity prerender.Capacity
	// InternalQueue sums the nodes' internal queues.
	InternalQueue, QueueMax int
	// Queues holds per host the high, normal and autorecache totals:
	// shared entries (claimed ones excluded; shared warm entries count as
	// autorecache), entries a node holds locally until Redis takes them,
	// and the nodes' autorecache queues summed.
	Queues map[int][3]QueueCount
}

func (n *Node) publishStats(ctx context.Context) {
	if n.opts.Stats == nil {
		return
	}
	b, err := json.Marshal(n.opts.Stats())
	if err != nil {
		return
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	n.note(n.rdb.Set(cctx, n.keys.stat(n.opts.NodeID), b, liveWindow).Err())
}

// Status reads the cluster-wide queue totals from Redis and sums the live
// nodes' heartbeat figures.
func (n *Node) Status(ctx context.Context) (Status, error) {
	ids, err := n.liveNodes(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("cluster: status: %w", err)
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	now := strconv.FormatInt(n.opts.Now().UnixMilli(), 10)
	pipe := n.rdb.Pipeline()
	type counts struct{ total, due *redis.IntCmd }
	q := map[int][3]counts{}
	for _, id := range n.opts.HostIDs {
		var c [3]counts
		for i, p := range []recache.Priority{recache.High, recache.Normal, recache.Auto} {
			c[i] = counts{pipe.ZCard(cctx, n.keys.queue(id, p)), pipe.ZCount(cctx, n.keys.queue(id, p), "-inf", now)}
		}
		q[id] = c
	}
	claimed := pipe.ZCard(cctx, n.keys.claims())
	paused := pipe.Exists(cctx, n.keys.paused())
	statKeys := make([]string, len(ids))
	for i, id := range ids {
		statKeys[i] = n.keys.stat(id)
	}
	var stats *redis.SliceCmd
	if len(statKeys) > 0 {
		stats = pipe.MGet(cctx, statKeys...)
	}
	if _, err := pipe.Exec(cctx); n.note(err) != nil {
		return Status{}, fmt.Errorf("cluster: status: %w", err)
	}
	st := Status{Nodes: ids, Paused: paused.Val() == 1, Claimed: int(claimed.Val()), Queues: map[int][3]QueueCount{}}
	for id, c := range q {
		st.Queues[id] = [3]QueueCount{
			{int(c[0].total.Val()), int(c[0].due.Val())},
			{int(c[1].total.Val()), int(c[1].due.Val())},
			{int(c[2].total.Val()), int(c[2].due.Val())},
		}
	}
	if stats == nil {
		return st, nil
	}
	for _, v := range stats.Val() {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var ns NodeStats
		if json.Unmarshal([]byte(s), &ns) != nil {
			continue
		}
		st.Capacity.Tabs += ns.Capacity.Tabs
		st.Capacity.Free += ns.Capacity.Free
		st.Capacity.ReservedForOnline += ns.Capacity.ReservedForOnline
		st.Capacity.AvailableForRecache += ns.Capacity.AvailableForRecache
		st.InternalQueue += ns.InternalQueue
		st.QueueMax += ns.QueueMax
		for id, c := range ns.Auto {
			if qs, ok := st.Queues[id]; ok {
				qs[2].Total += c.Total
				qs[2].DueNow += c.DueNow
				st.Queues[id] = qs
			}
		}
		for id, c := range ns.Local {
			if qs, ok := st.Queues[id]; ok {
				for i := range 2 {
					qs[i].Total += c[i].Total
					qs[i].DueNow += c[i].DueNow
				}
				st.Queues[id] = qs
			}
		}
	}
	return st, nil
}

func clipString(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

package recache

import (
	"context"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

// Shared is a recache queue several schedulers share (cluster.Node). Its
// methods bound their own calls; an error means the queue is unreachable
// and the scheduler goes on alone.
type Shared interface {
	// Push queues keys at p (High or Normal) due at due; a key keeps its
	// earlier due time and its higher priority.
	Push(ctx context.Context, keys []cachestore.Key, p Priority, due time.Time) error
	// Claim takes up to n due entries for this scheduler, high before
	// normal; paused reports a cluster-wide pause (nothing claimed).
	Claim(ctx context.Context, n int) (claims []Claim, paused bool, err error)
	// Finish settles a claim: done when retryAt is zero, else back in the
	// queue due at retryAt, having failed attempts times. result is the
	// render's outcome when done (nil: stored); a warm claim's (Priority
	// Auto) is announced to every scheduler's OnWarmed function.
	Finish(ctx context.Context, c Claim, retryAt time.Time, attempts int, result error) error
	// Remove drops keys queued at p (a cancelled warmup's).
	Remove(ctx context.Context, keys []cachestore.Key, p Priority) error
	// OnWarmed sets the function told of each warm render settled by any
	// scheduler sharing the queue.
	OnWarmed(f func(k cachestore.Key, result error))
	// SetPaused pauses or resumes every scheduler sharing the queue.
	SetPaused(ctx context.Context, paused bool) error
}

// Claim is an entry claimed from a Shared queue.
type Claim struct {
	ID       string // the queue's name for the claim
	Key      cachestore.Key
	Priority Priority
	Attempts int // failed renders so far
}

// sharedBatch bounds the journaled entries moved to Shared per tick.
const sharedBatch = 500

// pushPause delivers the last Pause or Resume to Shared; a failure leaves
// it marked, and the next tick tries again before reading the cluster's
// state.
func (s *Scheduler) pushPause(ctx context.Context) bool {
	s.mu.Lock()
	push, p := s.pausePush, s.paused.Load()
	s.mu.Unlock()
	if !push {
		return true
	}
	if err := s.opts.Shared.SetPaused(ctx, p); err != nil {
		s.log.Warn("recache: pause state kept on this node until the cluster is reachable", "paused", p, "err", err)
		return false
	}
	s.mu.Lock()
	if s.paused.Load() == p {
		s.pausePush = false
	}
	s.mu.Unlock()
	return true
}

// adoptPaused takes the cluster's pause state p, read while no Pause or
// Resume ran here (pauseGen still gen, nothing left to deliver).
func (s *Scheduler) adoptPaused(p bool, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pauseGen != gen || s.pausePush || s.paused.Load() == p {
		return
	}
	s.storePausedLocked(p)
}

// tickShared moves journaled entries to Shared, follows the cluster's pause
// state, and claims shared entries for the budget left after local
// dispatch is counted.
func (s *Scheduler) tickShared(ctx context.Context, now time.Time) {
	s.moveToShared(ctx)
	if !s.pushPause(ctx) {
		return
	}
	capacity := s.share()
	s.mu.Lock()
	budget := min(capacity, s.opts.QueueSize) - s.dispatched
	gen := s.pauseGen
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	claims, paused, err := s.opts.Shared.Claim(ctx, max(budget, 0))
	if err != nil {
		s.log.Debug("recache: shared queue unreachable", "err", err)
		return
	}
	s.adoptPaused(paused, gen)
	var back []Claim
	var recs []record
	s.mu.Lock()
	for _, c := range claims {
		if s.closed || s.checkKey(c.Key) != nil {
			back = append(back, c)
			continue
		}
		it, ok := s.items[c.Key]
		switch {
		case ok && it.inflight:
			back = append(back, c) // rendering here now: the claim waits its turn
			continue
		case ok:
			if it.journaled() {
				recs = append(recs, doneRecord(c.Key)) // the claim holds it now
			}
			s.queues[c.Key.HostID].remove(it)
			if c.Priority < it.prio {
				it.prio = c.Priority
			}
		default:
			s.seq++
			it = &item{key: c.Key, prio: c.Priority, seq: s.seq, index: -1}
			s.items[c.Key] = it
		}
		it.claim = &c
		it.attempts = c.Attempts
		it.due = now
		it.inflight = true
		s.dispatched++
		s.m.claimed.Inc()
		select {
		case s.jobs <- job{it: it, prio: it.prio}:
		default: // the budget was spent meanwhile (Enqueue cannot dispatch, so only by a race with Tick)
			it.inflight = false
			s.dispatched--
			it.claim = nil
			s.queues[c.Key.HostID].push(it)
			back = append(back, c)
		}
	}
	s.writeDoneLocked(recs)
	s.mu.Unlock()
	for _, c := range back {
		if err := s.opts.Shared.Finish(ctx, c, now.Add(time.Second), c.Attempts, nil); err != nil {
			s.log.Debug("recache: claim left to lapse", "key", c.Key.String(), "err", err)
		}
	}
}

// moveToShared pushes journaled entries that wait here (not rendering, no
// warmup waiting for them) to Shared, and drops them from this node's
// queues once Shared holds them.
func (s *Scheduler) moveToShared(ctx context.Context) {
	type moved struct {
		it   *item
		prio Priority
		due  time.Time
	}
	s.mu.Lock()
	var batch []moved
	// The high and normal heaps hold exactly the journaled entries waiting
	// here (rendering or claimed ones are in no heap); the autorecache heap,
	// by far the largest, is not looked at.
scan:
	for _, id := range s.hosts {
		for _, p := range []Priority{High, Normal} {
			for _, it := range s.queues[id].q[p.index()] {
				if len(batch) == sharedBatch {
					break scan
				}
				if len(it.warms) == 0 {
					batch = append(batch, moved{it, it.prio, it.due})
				}
			}
		}
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	for _, p := range []Priority{High, Normal} {
		byDue := map[time.Time][]cachestore.Key{}
		for _, m := range batch {
			if m.prio == p {
				byDue[m.due] = append(byDue[m.due], m.it.key)
			}
		}
		for due, keys := range byDue {
			if err := s.opts.Shared.Push(ctx, keys, p, due); err != nil {
				s.log.Debug("recache: shared queue unreachable: entries stay in the journal", "err", err)
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []record
	for _, m := range batch {
		it := m.it
		if s.items[it.key] != it || it.inflight || it.prio != m.prio || len(it.warms) > 0 {
			continue // changed meanwhile: the next tick moves it
		}
		s.queues[it.key.HostID].remove(it)
		delete(s.items, it.key)
		recs = append(recs, doneRecord(it.key))
	}
	s.m.shared.Add(len(recs))
	s.writeDoneLocked(recs)
}

// sharedFinish is a claim settled by finish, delivered after mu is released.
type sharedFinish struct {
	c        Claim
	retryAt  time.Time
	attempts int
	result   error
}

func (s *Scheduler) deliverFinished(fs []sharedFinish) {
	for _, f := range fs {
		if err := s.opts.Shared.Finish(context.Background(), f.c, f.retryAt, f.attempts, f.result); err != nil {
			s.log.Warn("recache: a finished claim could not be settled: its lease lapses and it renders again",
				"key", f.c.Key.String(), "err", err)
		}
	}
}

// warmShared queues keys as warm entries in Shared, for any node to render,
// and registers ws to hear of each one settled; false when Shared failed
// (the caller warms locally).
func (s *Scheduler) warmShared(keys []cachestore.Key, ws *warmSet) bool {
	if err := s.opts.Shared.Push(context.Background(), keys, Auto, s.opts.Now()); err != nil {
		s.log.Warn("recache: warmup rendered by this node alone: the shared queue is unreachable", "err", err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		s.sharedWarms[k] = append(s.sharedWarms[k], ws)
	}
	ws.pending = len(keys)
	return true
}

// warmedShared settles the warm sets waiting here for k, rendered by some
// node of the cluster (Shared.OnWarmed).
func (s *Scheduler) warmedShared(k cachestore.Key, result error) {
	s.mu.Lock()
	wss := s.sharedWarms[k]
	delete(s.sharedWarms, k)
	s.mu.Unlock()
	ds := make([]warmDone, len(wss))
	for i, ws := range wss {
		ds[i] = warmDone{ws: ws, key: k, err: result}
	}
	report(ds)
}

// cancelShared stops waiting for ws's keys and removes from Shared those no
// other warmup here waits for.
func (s *Scheduler) cancelShared(keys []cachestore.Key, ws *warmSet) {
	var drop []cachestore.Key
	s.mu.Lock()
	for _, k := range keys {
		rest := dropWarm(s.sharedWarms[k], ws)
		if len(rest) == 0 {
			delete(s.sharedWarms, k)
			drop = append(drop, k)
		} else {
			s.sharedWarms[k] = rest
		}
	}
	s.mu.Unlock()
	if err := s.opts.Shared.Remove(context.Background(), drop, Auto); err != nil {
		s.log.Warn("recache: a cancelled warmup's entries stay in the shared queue", "err", err)
	}
}

// settleSharedLocked settles every warm set waiting for a shared warm
// render with err; the caller reports the result after releasing mu.
func (s *Scheduler) settleSharedLocked(keys []cachestore.Key, err error) []warmDone {
	var out []warmDone
	settle := func(k cachestore.Key) {
		for _, ws := range s.sharedWarms[k] {
			out = append(out, warmDone{ws: ws, key: k, err: err})
		}
		delete(s.sharedWarms, k)
	}
	if keys == nil {
		for k := range s.sharedWarms {
			settle(k)
		}
		return out
	}
	for _, k := range keys {
		settle(k)
	}
	return out
}

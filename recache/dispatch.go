package recache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/prerender"
)

// Run starts the workers and calls Tick every Options.Tick until ctx is done,
// then waits for the workers (renders in flight see ctx cancelled) and
// returns nil. With a Store it also rebuilds the autorecache queue from the
// cache index in the background once the index is ready.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range s.opts.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-s.jobs:
					s.work(ctx, j)
				}
			}
		})
	}
	t := time.NewTicker(s.opts.Tick)
	defer t.Stop()
	rebuilt := s.opts.Store == nil
	for {
		if !rebuilt && s.opts.Store.Stats().IndexReady {
			rebuilt = true
			wg.Go(func() { s.rebuildAuto(ctx) })
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			s.drain()
			return nil
		case <-t.C:
			s.tick(ctx, s.opts.Now())
		case k := <-s.offers:
			// Stale hits: due now, not journaled (the next stale hit asks again).
			if _, err := s.Enqueue([]cachestore.Key{k}, Auto); err != nil {
				s.log.Debug("recache: stale hit not queued", "key", k.String(), "err", err)
			}
		}
	}
}

// Offer asks for an autorecache of k, due now, without waiting: it never
// blocks the caller (a crawler's request on a stale hit). When the hand-off
// buffer is full the offer is dropped and Offer returns false; the next
// stale hit offers again.
func (s *Scheduler) Offer(k cachestore.Key) bool {
	select {
	case s.offers <- k:
		return true
	default:
		s.m.offersDropped.Inc()
		return false
	}
}

// drain puts back entries dispatched but never picked up by a worker.
func (s *Scheduler) drain() {
	for {
		select {
		case j := <-s.jobs:
			s.finish(j.it, outcomeRequeue, nil)
		default:
			return
		}
	}
}

// Tick is one dispatch step at now: unless paused, it moves due entries into
// the internal queue, high before normal before autorecache and round-robin
// across hosts within a level, never more than the recache share (Capacity()
// plus the scheduler's own running renders) minus the entries already
// dispatched and unfinished, nor more than the queue bound. Run calls it every
// Options.Tick; tests call it directly.
//
// With Options.Shared it first moves journaled entries there and claims
// shared entries for the budget, then dispatches what is left here.
func (s *Scheduler) Tick(now time.Time) { s.tick(context.Background(), now) }

func (s *Scheduler) tick(ctx context.Context, now time.Time) {
	if s.opts.Shared != nil {
		s.tickShared(ctx, now)
	}
	capacity := s.share()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastTick = now
	s.flushDoneLocked()
	if s.paused.Load() || s.closed || len(s.hosts) == 0 {
		return
	}
	budget := min(capacity, s.opts.QueueSize) - s.dispatched
	n := len(s.hosts)
	for level := 0; level < numPriorities && budget > 0; level++ {
		start := s.cursor[level] % n
		for budget > 0 {
			progress := false
			for i := 0; i < n && budget > 0; i++ {
				idx := (start + i) % n
				it := s.queues[s.hosts[idx]].popDue(level, now)
				if it == nil {
					continue
				}
				it.inflight = true
				s.dispatched++
				s.jobs <- job{it: it, prio: it.prio} // never blocks: dispatched <= QueueSize = cap(jobs)
				budget--
				progress = true
				s.cursor[level] = idx + 1
			}
			if !progress {
				break
			}
		}
	}
}

// share is the tabs recache may hold now, its running renders included.
func (s *Scheduler) share() int {
	return s.opts.Capacity() + int(s.rendering.Load())
}

type outcome int

const (
	outcomeOK      outcome = iota
	outcomeFail            // render failed: retry with backoff or drop
	outcomeRequeue         // no tab or shutting down: back in the queue, no attempt counted
	outcomeGone            // autorecache entry whose key is no longer stored
	outcomeIdle            // autorecache entry no crawler asked for since (ServedOnly)
)

func (s *Scheduler) work(ctx context.Context, j job) {
	k := j.it.key
	s.mu.Lock()
	// Rendered whether stored or served: a warmup waits here or, claimed
	// from the cluster's warm queue, elsewhere.
	warm := len(j.it.warms) > 0 || j.it.claim != nil && j.it.claim.Priority == Auto
	s.mu.Unlock()
	if j.prio == Auto && !warm && s.served != nil && !s.served.take(k) {
		s.finish(j.it, outcomeIdle, nil)
		return
	}
	if j.prio == Auto && !warm && s.opts.Store != nil {
		if _, ok := s.opts.Store.Get(k); !ok {
			s.finish(j.it, outcomeGone, nil)
			return
		}
	}
	s.rendering.Add(1)
	out, err := s.opts.Refresh(ctx, k, prerender.Recache)
	s.rendering.Add(-1)
	switch {
	case err == nil && out.Stored:
		s.Track(out.Entry)
		s.finish(j.it, outcomeOK, nil)
	case err == nil: // rendered, kept out of the cache: not retried
		s.finish(j.it, outcomeOK, ErrNotStored)
	case ctx.Err() != nil || errors.Is(err, prerender.ErrNoCapacity):
		s.finish(j.it, outcomeRequeue, err)
	default:
		s.finish(j.it, outcomeFail, err)
	}
}

// backoff is the delay before the retry that follows failed attempt n.
func (s *Scheduler) backoff(n int) time.Duration {
	d := s.opts.Backoff
	for i := 1; i < n && d < 6*time.Hour; i++ {
		d *= 4
	}
	return min(d, 6*time.Hour)
}

// finish settles a dispatched item: it leaves the scheduler, goes back for a
// retry, or takes up the request that arrived while it rendered.
//
// Warm renders waiting for it are settled when the render succeeded or the
// entry leaves; they keep waiting through a retry.
func (s *Scheduler) finish(it *item, o outcome, err error) {
	var settled []warmDone
	var shared []sharedFinish
	defer func() { s.deliverFinished(shared) }()
	defer func() { report(settled) }()
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dispatched--
	it.inflight = false
	wasJournaled := it.journaled()
	abandoned := it.forgotten || it.warmOnly && len(it.warms) == 0 // nobody wants it any more

	retry := false
	var due time.Time
	switch o {
	case outcomeOK:
		s.m.ok.Inc()
		settled = settleWarmsLocked(it, err)
	case outcomeGone, outcomeIdle:
		if o == outcomeGone {
			s.m.gone.Inc()
		} else {
			s.m.idle.Inc()
		}
		// A Warm that arrived while the entry was checked still wants it.
		retry, due = len(it.warms) > 0, now
	case outcomeRequeue:
		s.m.requeued.Inc()
		retry, due = !abandoned, now
	case outcomeFail:
		it.attempts++
		switch {
		case abandoned:
		case it.attempts >= s.opts.MaxAttempts:
			s.m.dropped.Inc()
			s.log.Warn("recache: render failed, dropped", "key", it.key.String(),
				"priority", it.prio.String(), "attempts", it.attempts, "err", err)
		default:
			s.m.retry.Inc()
			retry, due = true, now.Add(s.backoff(it.attempts))
			s.log.Debug("recache: render failed, will retry", "key", it.key.String(),
				"attempt", it.attempts, "at", due, "err", err)
		}
	}
	if it.claim != nil {
		// The cluster's entry: settled there, retried there unless a warmup
		// here waits for it.
		f := sharedFinish{c: *it.claim, attempts: it.attempts, result: err}
		if retry && len(it.warms) == 0 {
			f.retryAt, retry = due, false
		}
		if f.retryAt.IsZero() && o != outcomeOK && f.result == nil {
			f.result = ErrForgotten // dropped unrendered (forgotten, or shutting down)
		}
		shared = append(shared, f)
		it.claim = nil
	}
	if !retry && len(it.warms) > 0 {
		if err == nil || it.forgotten {
			err = ErrForgotten
		}
		settled = settleWarmsLocked(it, err)
	}

	switch {
	case retry:
		if it.pend != 0 {
			it.prio = min(it.prio, it.pend)
			if it.pendDue.Before(due) {
				due = it.pendDue
			}
		}
		it.due = due
	case it.pend != 0:
		it.prio, it.due, it.attempts = it.pend, it.pendDue, 0
	default:
		delete(s.items, it.key)
		if wasJournaled {
			s.writeDoneLocked([]record{doneRecord(it.key)})
		}
		return
	}
	it.pend, it.pendDue, it.forgotten = 0, time.Time{}, false
	if s.closed {
		settled = append(settled, settleWarmsLocked(it, ErrClosed)...)
		delete(s.items, it.key)
		return
	}
	s.queues[it.key.HostID].push(it)
	if wasJournaled && !it.journaled() {
		s.writeDoneLocked([]record{doneRecord(it.key)})
	}
}

// rebuildAuto queues an autorecache for every stored entry of a configured
// host and dimension, at its RenderedAt plus the host's interval. Entries
// already queued (Track or operator requests since start) are left alone.
func (s *Scheduler) rebuildAuto(ctx context.Context) {
	var keys []cachestore.Key
	var dues []time.Time
	s.opts.Store.Range(func(m cachestore.Meta) bool {
		if s.checkKey(m.Key) != nil {
			return true
		}
		h, _ := s.opts.Sites.ByID(m.Key.HostID)
		keys = append(keys, m.Key)
		dues = append(dues, m.RenderedAt.Add(s.interval(h)))
		return ctx.Err() == nil
	})
	const batch = 1000
	for i := 0; i < len(keys) && ctx.Err() == nil; i += batch {
		s.mu.Lock()
		for j := i; j < min(i+batch, len(keys)); j++ {
			s.trackLocked(keys[j], dues[j], false)
		}
		s.mu.Unlock()
	}
	s.log.Info("recache: autorecache queue rebuilt from the cache index", "entries", len(keys))
}

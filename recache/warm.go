package recache

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prismproxy/prism/cachestore"
)

var (
	// ErrForgotten settles a warm render whose key was invalidated (Forget)
	// before it rendered.
	ErrForgotten = errors.New("recache: invalidated before it rendered")
	// ErrNotStored settles a warm render that rendered but was kept out of
	// the cache: a status that is not cached, a partial render where a
	// complete entry exists, a purge while rendering, or a store failure.
	ErrNotStored = errors.New("recache: rendered but not stored")
)

// warmSet is one Warm call: how many keys it still waits for, and its
// callback. Warm sets pending under the scheduler's mu before any entry can
// report; from then on cb guards pending and ended, and serializes done.
type warmSet struct {
	done     func(cachestore.Key, error)
	finished chan struct{} // closed when pending reaches 0

	cb      sync.Mutex
	pending int
	ended   bool // no more callbacks: every key settled, or Warm returned
}

// warmDone is a settled warm render, reported after mu is released.
type warmDone struct {
	ws  *warmSet
	key cachestore.Key
	err error
}

// Warm renders keys in the background and calls done once for each distinct
// key as it is settled: err nil when the render was stored; ErrNotStored when
// it rendered but was kept out of the cache; else the error of its last
// attempt once the scheduler's retry policy (MaxAttempts, Backoff) gives up
// on it, ErrForgotten or ErrClosed. It returns when every key is settled, or when
// ctx is done (returning ctx's error): keys it alone asked for leave the
// queue, and done is never called after Warm returns.
//
// Warm renders go through the autorecache queue: they share its tabs, its
// fairness across hosts and its workers with every other background render,
// are rendered whether or not the key is stored or was served, and are not
// journaled (a warmup does not outlive the process that runs it). A key
// already queued keeps its entry and is made due now. A paused scheduler
// holds warm renders too.
func (s *Scheduler) Warm(ctx context.Context, keys []cachestore.Key, done func(cachestore.Key, error)) error {
	for _, k := range keys {
		if err := s.checkKey(k); err != nil {
			return err
		}
	}
	if done == nil {
		done = func(cachestore.Key, error) {}
	}
	ws := &warmSet{done: done, finished: make(chan struct{})}
	if s.opts.Shared != nil {
		return s.warmCluster(ctx, keys, ws)
	}
	return s.warmHere(ctx, keys, ws)
}

// warmCluster queues the warmup in the shared queue, for every node to
// render, and waits for the results announced; with the shared queue
// unreachable the warmup is rendered here.
func (s *Scheduler) warmCluster(ctx context.Context, keys []cachestore.Key, ws *warmSet) error {
	uniq := make([]cachestore.Key, 0, len(keys))
	seen := make(map[cachestore.Key]struct{}, len(keys))
	for _, k := range keys {
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if len(uniq) == 0 {
		return nil
	}
	if !s.warmShared(uniq, ws) {
		return s.warmHere(ctx, keys, ws)
	}
	select {
	case <-ws.finished:
		return nil
	case <-ctx.Done():
	}
	s.cancelShared(uniq, ws)
	ws.cb.Lock()
	ws.ended = true
	ws.cb.Unlock()
	return fmt.Errorf("recache: warm: %w", ctx.Err())
}

// warmHere renders the warmup on this node.
func (s *Scheduler) warmHere(ctx context.Context, keys []cachestore.Key, ws *warmSet) error {
	now := s.opts.Now()
	mine := make(map[cachestore.Key]struct{}, len(keys))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	for _, k := range keys {
		if _, dup := mine[k]; dup {
			continue
		}
		mine[k] = struct{}{}
		it, ok := s.items[k]
		switch {
		case !ok:
			it = s.insert(k, Auto, now)
			it.warmOnly = true
			s.m.enqueued[Auto.index()].Inc()
		case !it.inflight:
			only := it.warmOnly
			s.enqueueLocked(k, Auto, now) // due now
			it.warmOnly = only
		}
		it.warms = append(it.warms, ws)
		ws.pending++
	}
	if ws.pending == 0 {
		close(ws.finished)
	}
	s.mu.Unlock()

	select {
	case <-ws.finished:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for k := range mine {
		it, ok := s.items[k]
		if !ok {
			continue
		}
		it.warms = dropWarm(it.warms, ws)
		if it.warmOnly && len(it.warms) == 0 && !it.inflight {
			s.queues[k.HostID].remove(it)
			delete(s.items, k)
		}
	}
	s.mu.Unlock()
	ws.cb.Lock() // a callback running now finishes before Warm returns
	ws.ended = true
	ws.cb.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recache: warm: %w", err)
	}
	return nil
}

func dropWarm(ws []*warmSet, w *warmSet) []*warmSet {
	for i, x := range ws {
		if x == w {
			return append(ws[:i], ws[i+1:]...)
		}
	}
	return ws
}

// settleWarmsLocked detaches it's warm sets and returns their reports.
func settleWarmsLocked(it *item, err error) []warmDone {
	if len(it.warms) == 0 {
		return nil
	}
	out := make([]warmDone, 0, len(it.warms))
	for _, ws := range it.warms {
		out = append(out, warmDone{ws: ws, key: it.key, err: err})
	}
	it.warms = nil
	return out
}

// report calls the callbacks of settled warm renders; the caller does not
// hold mu.
func report(ds []warmDone) {
	for _, d := range ds {
		d.ws.cb.Lock()
		if !d.ws.ended {
			d.ws.done(d.key, d.err)
			d.ws.pending--
			if d.ws.pending == 0 {
				d.ws.ended = true
				close(d.ws.finished)
			}
		}
		d.ws.cb.Unlock()
	}
}

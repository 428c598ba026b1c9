package recache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

// warmCall runs Warm in the background and collects its reports.
type warmCall struct {
	mu      sync.Mutex
	reports map[cachestore.Key][]error
	ret     chan error
}

func startWarm(ctx context.Context, s *Scheduler, keys ...cachestore.Key) *warmCall {
	w := &warmCall{reports: map[cachestore.Key][]error{}, ret: make(chan error, 1)}
	go func() {
		w.ret <- s.Warm(ctx, keys, func(k cachestore.Key, err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.reports[k] = append(w.reports[k], err)
		})
	}()
	return w
}

func (w *warmCall) Reports() map[cachestore.Key][]error {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[cachestore.Key][]error, len(w.reports))
	for k, v := range w.reports {
		out[k] = append([]error(nil), v...)
	}
	return out
}

// wait ticks the scheduler until Warm returns.
func (w *warmCall) wait(t *testing.T, f *fixture) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-w.ret:
			return err
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Warm did not return")
		}
		f.step(t)
	}
}

// waitQueued waits until the scheduler holds n entries.
func waitQueued(t *testing.T, s *Scheduler, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d entries queued", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.items) == n
	})
}

func TestWarmRendersUnstoredAndUnservedKeys(t *testing.T) {
	// A Store and ServedOnly would drop autorecache entries that are not
	// stored or not served: warm renders are rendered all the same.
	ref := &refresher{stores: true}
	f := newFixture(t, 2, 2, ref, func(o *Options) {
		o.ServedOnly = true
		o.Store = emptyStore(t)
	})
	f.run(t)
	keys := []cachestore.Key{key(1, 1, "/a"), key(1, 2, "/a"), key(2, 1, "/b"), key(1, 1, "/a")} // one duplicate
	w := startWarm(context.Background(), f.s, keys...)
	if err := w.wait(t, f); err != nil {
		t.Fatalf("Warm = %v", err)
	}
	got := w.Reports()
	if len(got) != 3 {
		t.Fatalf("reports for %d keys, want 3: %v", len(got), got)
	}
	for _, k := range keys {
		if errs := got[k]; len(errs) != 1 || errs[0] != nil {
			t.Errorf("%v reported %v, want one nil", k, errs)
		}
	}
	if n := len(ref.Calls()); n != 3 {
		t.Fatalf("renders %d, want 3", n)
	}
	// What the warm renders stored is tracked for its autorecache.
	assertQueues(t, f.s, 1, HostStatus{Auto: QueueStatus{2, 0}})
	assertQueues(t, f.s, 2, HostStatus{Auto: QueueStatus{1, 0}})
}

func TestWarmFollowsTheRetryPolicy(t *testing.T) {
	boom := errors.New("origin down")
	ref := &refresher{result: func(k cachestore.Key, _ int) error {
		if k.URL == "/bad" {
			return boom
		}
		return nil
	}}
	f := newFixture(t, 1, 1, ref, func(o *Options) { o.MaxAttempts = 2; o.Backoff = time.Minute })
	f.run(t)
	w := startWarm(context.Background(), f.s, key(1, 1, "/bad"), key(1, 1, "/ok"))
	waitQueued(t, f.s, 2)
	f.step(t)
	f.step(t)
	if n := len(ref.Calls()); n != 2 {
		t.Fatalf("renders %d before the backoff, want 2", n)
	}
	if got := w.Reports(); len(got[key(1, 1, "/bad")]) != 0 {
		t.Fatalf("failure reported before the retries ran out: %v", got)
	}
	f.clk.Advance(time.Minute)
	if err := w.wait(t, f); err != nil {
		t.Fatalf("Warm = %v", err)
	}
	got := w.Reports()
	if errs := got[key(1, 1, "/bad")]; len(errs) != 1 || !errors.Is(errs[0], boom) {
		t.Fatalf("/bad reported %v, want the render's error once", errs)
	}
	// The fake stores nothing: a render kept out of the cache is reported.
	if errs := got[key(1, 1, "/ok")]; len(errs) != 1 || !errors.Is(errs[0], ErrNotStored) {
		t.Fatalf("/ok reported %v, want ErrNotStored", errs)
	}
	if n := len(ref.Calls()); n != 3 {
		t.Fatalf("renders %d, want 3 (two attempts of /bad)", n)
	}
	if r, d := f.s.m.retry.Get(), f.s.m.dropped.Get(); r != 1 || d != 1 {
		t.Fatalf("retry %d dropped %d, want 1 and 1", r, d)
	}
}

func TestWarmSharesTabsWithRecache(t *testing.T) {
	ref := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 100)}
	f := newFixture(t, 2, 2, ref, func(o *Options) { o.Workers = 8 })
	f.run(t)
	var ops, warm []cachestore.Key
	for i := range 4 {
		ops = append(ops, key(1, 1, fmt.Sprintf("/op%d", i)))
		warm = append(warm, key(2, 1, fmt.Sprintf("/warm%d", i)))
	}
	mustEnqueue(t, f.s, Normal, ops...)
	w := startWarm(context.Background(), f.s, warm...)
	waitQueued(t, f.s, 8)
	var order []cachestore.Key
	for range 4 {
		f.s.Tick(f.clk.Now())
		f.s.Tick(f.clk.Now()) // a second tick adds nothing while two render
		for range 2 {
			order = append(order, <-ref.started)
		}
		if st := f.s.Status(); st.InternalQueue != 2 {
			t.Fatalf("internal queue %d, want 2", st.InternalQueue)
		}
		ref.gate <- struct{}{}
		ref.gate <- struct{}{}
		f.idle(t)
	}
	if err := w.wait(t, f); err != nil {
		t.Fatalf("Warm = %v", err)
	}
	if got := ref.MaxInFlight(); got != 2 {
		t.Fatalf("max renders in flight %d, want 2 (one share for recache and warm renders)", got)
	}
	// Operator recaches go first: warm renders are background work.
	for i, k := range order[:4] {
		if k.HostID != 1 {
			t.Fatalf("render %d was %v before every operator recache: %v", i, k, order)
		}
	}
}

func TestWarmCancel(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 1, 0, ref, nil) // no capacity: nothing renders
	f.run(t)
	queued := key(1, 1, "/queued")
	mustEnqueue(t, f.s, Normal, queued)
	ctx, cancel := context.WithCancel(context.Background())
	w := startWarm(ctx, f.s, queued, key(1, 1, "/w1"), key(1, 2, "/w2"))
	waitQueued(t, f.s, 3)
	cancel()
	if err := <-w.ret; !errors.Is(err, context.Canceled) {
		t.Fatalf("Warm = %v, want context.Canceled", err)
	}
	// Only what the warm call alone asked for leaves the queue.
	assertQueues(t, f.s, 1, HostStatus{Normal: QueueStatus{1, 1}})
	f.cap.Set(1)
	f.step(t)
	if calls := ref.Calls(); len(calls) != 1 || calls[0] != queued {
		t.Fatalf("renders after cancel %v, want only %v", calls, queued)
	}
	if got := w.Reports(); len(got) != 0 {
		t.Fatalf("reports after Warm returned: %v", got)
	}
}

func TestWarmForgottenAndClosed(t *testing.T) {
	f := newFixture(t, 1, 0, nil, nil)
	f.run(t)
	purged, left := key(1, 1, "/purged"), key(1, 1, "/left")
	w := startWarm(context.Background(), f.s, purged, left)
	waitQueued(t, f.s, 2)
	f.s.Forget(purged)
	waitFor(t, "purged key reported", func() bool { return len(w.Reports()[purged]) == 1 })
	if errs := w.Reports()[purged]; !errors.Is(errs[0], ErrForgotten) {
		t.Fatalf("purged key reported %v, want ErrForgotten", errs)
	}
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-w.ret; err != nil {
		t.Fatalf("Warm = %v after every key settled", err)
	}
	if errs := w.Reports()[left]; len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
		t.Fatalf("key left at Close reported %v, want ErrClosed", errs)
	}
	if err := f.s.Warm(context.Background(), []cachestore.Key{left}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Warm after Close = %v, want ErrClosed", err)
	}
	if err := f.s.Warm(context.Background(), []cachestore.Key{key(9, 1, "/x")}, nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("Warm of an unconfigured host = %v, want ErrInvalidKey", err)
	}
}

func TestWarmJoinsARenderInFlight(t *testing.T) {
	ref := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 4), stores: true}
	f := newFixture(t, 1, 1, ref, nil)
	f.run(t)
	k := key(1, 1, "/busy")
	mustEnqueue(t, f.s, High, k)
	f.s.Tick(f.clk.Now())
	<-ref.started
	w := startWarm(context.Background(), f.s, k)
	waitFor(t, "warm attached", func() bool {
		f.s.mu.Lock()
		defer f.s.mu.Unlock()
		return len(f.s.items[k].warms) == 1
	})
	ref.gate <- struct{}{}
	if err := w.wait(t, f); err != nil {
		t.Fatalf("Warm = %v", err)
	}
	if errs := w.Reports()[k]; len(errs) != 1 || errs[0] != nil {
		t.Fatalf("reported %v, want nil once", errs)
	}
	if n := len(ref.Calls()); n != 1 {
		t.Fatalf("renders %d, want 1: the render in flight serves the warm call", n)
	}
}

func TestCapacityCountsRunningRendersOnce(t *testing.T) {
	// The renderer's figure already leaves out the tabs recache renders
	// hold; the scheduler must not subtract them a second time.
	ref := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 4)}
	f := newFixture(t, 1, 2, ref, func(o *Options) { o.Workers = 4 })
	f.run(t)
	mustEnqueue(t, f.s, Normal, key(1, 1, "/1"), key(1, 1, "/2"), key(1, 1, "/3"))
	f.s.Tick(f.clk.Now())
	<-ref.started
	<-ref.started
	f.s.Tick(f.clk.Now())
	if st := f.s.Status(); st.InternalQueue != 2 {
		t.Fatalf("internal queue %d, want 2 of a 2-tab share", st.InternalQueue)
	}
	ref.gate <- struct{}{}
	waitFor(t, "one render finished", func() bool { return f.s.Status().InternalQueue == 1 })
	f.s.Tick(f.clk.Now())
	<-ref.started
	if st := f.s.Status(); st.InternalQueue != 2 {
		t.Fatalf("internal queue %d after one finished, want 2", st.InternalQueue)
	}
	ref.gate <- struct{}{}
	ref.gate <- struct{}{}
	f.idle(t)
	if got := ref.MaxInFlight(); got != 2 {
		t.Fatalf("max renders in flight %d, want 2", got)
	}
}

// emptyStore is a real, running, empty cache store.
func emptyStore(t *testing.T) *cachestore.Store {
	t.Helper()
	store, err := cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	waitFor(t, "store index", func() bool { return store.Stats().IndexReady })
	return store
}

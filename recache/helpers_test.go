package recache

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

var quiet = slog.New(slog.DiscardHandler)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is an injected, manually advanced clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: epoch} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// testSites builds a table of n hosts (ids 1..n, "hN.example"), each with
// dimensions 1 and 2. Host 2 overrides the recache interval to 1h.
func testSites(t testing.TB, n int) *site.Table {
	t.Helper()
	var hosts []site.Host
	for i := 1; i <= n; i++ {
		h := site.Host{
			ID:     i,
			Name:   fmt.Sprintf("h%d.example", i),
			Origin: &url.URL{Scheme: "http", Host: "127.0.0.1:1"},
			Dimensions: []site.Dimension{
				{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot"}},
				{ID: 2, Name: "mobile", MatchUA: []string{"iPhone"}, Mobile: true},
			},
		}
		if i == 2 {
			h.RecacheInterval = time.Hour
		}
		hosts = append(hosts, h)
	}
	tab, err := site.New(site.Options{Hosts: hosts})
	if err != nil {
		t.Fatalf("site.New: %v", err)
	}
	return tab
}

func key(host, dim int, u string) cachestore.Key {
	return cachestore.Key{HostID: host, DimensionID: dim, URL: u}
}

// refresher is a fake Refresh: it records calls and in-flight counts and
// answers with result (nil: success). With gate set, each call waits for a
// value on gate before answering.
type refresher struct {
	mu       sync.Mutex
	calls    []cachestore.Key
	inflight int
	maxIn    int
	result   func(k cachestore.Key, call int) error
	gate     chan struct{}
	started  chan cachestore.Key // optional: told of every call
	stores   bool                // a success says it stored an entry
	tabs     int                 // > 0: refuse with ErrNoCapacity beyond this many in flight
	refused  int
}

func (r *refresher) Refresh(ctx context.Context, k cachestore.Key, _ prerender.Class) (fill.Outcome, error) {
	if err := r.refresh(ctx, k); err != nil || !r.stores {
		return fill.Outcome{}, err
	}
	return fill.Outcome{Entry: &cachestore.Entry{Key: k, RenderedAt: epoch}, Stored: true}, nil
}

func (r *refresher) refresh(ctx context.Context, k cachestore.Key) error {
	r.mu.Lock()
	if r.tabs > 0 && r.inflight >= r.tabs {
		// As the renderer does: no tab free, refused at once (the
		// scheduler requeues it without counting an attempt).
		r.refused++
		r.mu.Unlock()
		return prerender.ErrNoCapacity
	}
	r.calls = append(r.calls, k)
	n := len(r.calls)
	r.inflight++
	r.maxIn = max(r.maxIn, r.inflight)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()
	if r.started != nil {
		r.started <- k
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.result != nil {
		return r.result(k, n)
	}
	return nil
}

func (r *refresher) Calls() []cachestore.Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cachestore.Key(nil), r.calls...)
}

func (r *refresher) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflight
}

func (r *refresher) MaxInFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIn
}

type fixture struct {
	s   *Scheduler
	clk *clock
	ref *refresher
	cap *capacity
	dir string
}

// capacity models the renderer's recache share: n tabs, of which the fake
// refresher's renders in flight are not free (as
// prerender.Capacity.AvailableForRecache reports them).
type capacity struct {
	mu   sync.Mutex
	n    int
	held func() int
}

func (c *capacity) Get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.n-c.held(), 0)
}

func (c *capacity) Set(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = n
}

// newFixture builds a scheduler over hosts with the fake refresher, a clock
// and a capacity of capN; mod may adjust the options. It does not start Run.
func newFixture(t testing.TB, hosts, capN int, ref *refresher, mod func(*Options)) *fixture {
	t.Helper()
	f := &fixture{clk: newClock(), ref: ref, cap: &capacity{n: capN}, dir: t.TempDir()}
	if f.ref == nil {
		f.ref = &refresher{}
	}
	f.cap.held = f.ref.InFlight
	opts := Options{
		Sites:      testSites(t, hosts),
		Refresh:    f.ref.Refresh,
		Capacity:   f.cap.Get,
		JournalDir: f.dir,
		Now:        f.clk.Now,
		Tick:       24 * time.Hour, // tests drive Tick themselves
		Logger:     quiet,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.s = s
	t.Cleanup(func() { s.Close() })
	return f
}

// run starts the scheduler's workers until the test ends.
func (f *fixture) run(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// idle waits until no entry is dispatched or rendering.
func (f *fixture) idle(t testing.TB) {
	t.Helper()
	waitFor(t, "internal queue empty", func() bool { return f.s.Status().InternalQueue == 0 })
}

// step ticks at the clock's time and waits for the dispatched work to finish.
func (f *fixture) step(t testing.TB) {
	t.Helper()
	f.s.Tick(f.clk.Now())
	f.idle(t)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func mustEnqueue(t testing.TB, s *Scheduler, p Priority, keys ...cachestore.Key) {
	t.Helper()
	if _, err := s.Enqueue(keys, p); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

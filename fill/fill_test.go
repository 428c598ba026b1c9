package fill_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

// fakeRenderer is the browser seam: a page per URL, counted.
type fakeRenderer struct {
	calls atomic.Int64
	mu    sync.Mutex
	reqs  []prerender.Request
	gate  chan struct{} // when non-nil, each render waits for it
}

func (f *fakeRenderer) render(ctx context.Context, req prerender.Request) (*prerender.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if strings.HasSuffix(req.URL, "/broken") {
		return &prerender.Result{Status: 503, Header: http.Header{}, HTML: []byte("<p>down</p>")}, nil
	}
	return &prerender.Result{Status: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
		HTML: []byte("<!DOCTYPE html><html><body>rendered " + req.URL + "</body></html>")}, nil
}

type env struct {
	sites *site.Table
	store *cachestore.Store
	pipe  *fill.Pipeline
	r     *fakeRenderer
}

func newEnv(t *testing.T, mods ...func(*fill.Options)) *env {
	t.Helper()
	ou, _ := url.Parse("http://127.0.0.1:1")
	sites, err := site.New(site.Options{Hosts: []site.Host{{
		ID: 1, Name: "example.com", Origin: ou,
		Dimensions: []site.Dimension{{ID: 1, Name: "desktop", MatchUA: []string{"@crawlers"}, Width: 1366, Height: 768}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: logger, MemoryBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	r := &fakeRenderer{}
	opts := fill.Options{Sites: sites, Store: store, Render: r.render, Logger: logger}
	for _, m := range mods {
		m(&opts)
	}
	pipe, err := fill.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sites: sites, store: store, pipe: pipe, r: r}
}

// A recache travels scheduler -> pipeline -> renderer and store, and the
// scheduler then schedules the entry's next autorecache: no proxy, no
// closure in between.
func TestRecacheEndToEnd(t *testing.T) {
	e := newEnv(t)
	sched, err := recache.New(recache.Options{
		Sites:      e.sites,
		Refresh:    e.pipe.Refresh,
		Capacity:   func() int { return 1 },
		Store:      e.store,
		Interval:   time.Hour,
		Tick:       time.Hour, // ticks come from the test
		JournalDir: t.TempDir(),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	defer func() { cancel(); <-done; sched.Close() }()

	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/products/1"}
	if n, err := sched.Enqueue([]cachestore.Key{k}, recache.High); err != nil || n != 1 {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sched.Tick(time.Now())
		if ent, ok := e.store.Get(k); ok {
			if len(ent.Body) == 0 || ent.Status != 200 {
				t.Fatalf("stored %+v", ent)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recache never stored the page")
		}
		time.Sleep(5 * time.Millisecond) // polling the store, not waiting for time
	}
	e.r.mu.Lock()
	req := e.r.reqs[0]
	e.r.mu.Unlock()
	if req.Class != prerender.Recache || req.URL != "https://example.com/products/1" {
		t.Errorf("render request %+v, want the recache class at the public URL", req)
	}
	// The stored entry's next autorecache is scheduled, an interval out.
	deadline = time.Now().Add(10 * time.Second)
	for sched.Status().Hosts[1].Auto.Total != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("autorecache not scheduled: %+v", sched.Status().Hosts[1])
		}
		time.Sleep(5 * time.Millisecond) // polling the scheduler
	}
	if due := sched.Status().Hosts[1].Auto.DueNow; due != 0 {
		t.Errorf("autorecache due now: %d, want 0 (an interval from now)", due)
	}
}

// Concurrent fills of one key share one render; a 5xx is never stored.
func TestFillSharesRenderAndKeepsErrorsOut(t *testing.T) {
	e := newEnv(t)
	e.r.gate = make(chan struct{})
	h, _ := e.sites.ByID(1)
	d, _ := h.Dimension(1)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/shared"}
	var wg sync.WaitGroup
	outs := make([]fill.Outcome, 5)
	for i := range outs {
		wg.Go(func() { outs[i], _, _ = e.pipe.Fill(context.Background(), k, h, d, "") })
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.pipe.Waiters(k) != len(outs) {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", e.pipe.Waiters(k), len(outs))
		}
		time.Sleep(time.Millisecond) // polling the pipeline
	}
	close(e.r.gate)
	wg.Wait()
	if n := e.r.calls.Load(); n != 1 {
		t.Errorf("%d renders for 5 concurrent fills, want 1", n)
	}
	for i, o := range outs {
		if !o.Stored || o.Entry == nil {
			t.Errorf("fill %d: %+v", i, o)
		}
	}
	bad := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/broken"}
	out, err := e.pipe.Refresh(context.Background(), bad, prerender.Recache)
	if !errors.Is(err, fill.ErrServerStatus) || out.Stored {
		t.Errorf("5xx: %+v, %v; want ErrServerStatus, not stored", out, err)
	}
	if _, ok := e.store.Get(bad); ok {
		t.Error("a 5xx render was stored")
	}
	if s := fill.CacheStale.String(); s != "STALE" || fill.CacheState(0).String() != "MISS" {
		t.Errorf("CacheState strings: %q, %q", s, fill.CacheState(0))
	}
}

func TestMaxAge(t *testing.T) {
	for _, tc := range []struct {
		ttl, stale, notFound, want time.Duration
	}{
		{0, 0, 0, 24 * time.Hour},
		{time.Hour, 72 * time.Hour, 0, 73 * time.Hour},
		{time.Minute, 0, 2 * time.Hour, 2 * time.Hour},
		{time.Hour, -time.Second, time.Minute, time.Hour},
	} {
		o := fill.Options{TTL: tc.ttl, StaleTTL: tc.stale, NotFoundTTL: tc.notFound}
		if got := o.MaxAge(); got != tc.want {
			t.Errorf("MaxAge(ttl %s, stale %s, not found %s) = %s, want %s", tc.ttl, tc.stale, tc.notFound, got, tc.want)
		}
	}
}

// fakeCluster is the cluster seam: a shared copy per key, and a lock that
// records what its release published.
type fakeCluster struct {
	mu        sync.Mutex
	shared    map[cachestore.Key]*cachestore.Entry
	lookups   int
	locks     int
	waited    bool                // Lock reports that another node held it
	onLock    func()              // runs while the lock is taken (another node stores, say)
	published []*cachestore.Entry // what releases published (nil: nothing)
}

func (c *fakeCluster) Lookup(_ context.Context, k cachestore.Key) *cachestore.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	return c.shared[k]
}

func (c *fakeCluster) Lock(context.Context, cachestore.Key) (fill.Lease, error) {
	c.mu.Lock()
	c.locks++
	f := c.onLock
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return fakeLease{c}, nil
}

type fakeLease struct{ c *fakeCluster }

func (l fakeLease) Waited() bool { return l.c.waited }

func (l fakeLease) Release(_ context.Context, e *cachestore.Entry) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.c.published = append(l.c.published, e)
}

func sharedEntry(k cachestore.Key, at time.Time) *cachestore.Entry {
	return &cachestore.Entry{Key: k, Status: 200, Header: http.Header{"Content-Type": {"text/html"}},
		Body: gzipped("<html>from another node</html>"), RenderedAt: at}
}

func TestClusterCopyAnswersAMissWithoutARender(t *testing.T) {
	c := &fakeCluster{shared: map[cachestore.Key]*cachestore.Entry{}}
	e := newEnv(t, func(o *fill.Options) { o.Cluster = c })
	h, _ := e.sites.ByID(1)
	d := &h.Dimensions[0]
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/shared"}
	c.shared[k] = sharedEntry(k, time.Now())
	out, cached, err := e.pipe.Fill(context.Background(), k, h, d, "")
	if err != nil || !cached || out.Entry == nil || out.Previous != fill.CacheMiss {
		t.Fatalf("Fill = %+v cached %v err %v, want the cluster's copy", out, cached, err)
	}
	if n := e.r.calls.Load(); n != 0 || c.locks != 0 {
		t.Fatalf("renders %d locks %d, want neither", n, c.locks)
	}
	if got, ok := e.store.Get(k); !ok || got.RenderedAt != c.shared[k].RenderedAt {
		t.Fatal("the cluster's copy was not taken into the local store")
	}
	// A stale shared copy is not an answer: the page renders under the lock.
	k2 := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/old"}
	c.shared[k2] = sharedEntry(k2, time.Now().Add(-48*time.Hour))
	if _, cached, err := e.pipe.Fill(context.Background(), k2, h, d, ""); err != nil || cached {
		t.Fatalf("Fill of a stale shared page: cached %v err %v, want a render", cached, err)
	}
	if n := e.r.calls.Load(); n != 1 || c.locks != 1 || len(c.published) != 1 || c.published[0] == nil {
		t.Fatalf("renders %d locks %d published %v, want one render, published on release", n, c.locks, c.published)
	}
}

func TestClusterLockWaiterTakesTheHoldersPage(t *testing.T) {
	c := &fakeCluster{shared: map[cachestore.Key]*cachestore.Entry{}, waited: true}
	e := newEnv(t, func(o *fill.Options) { o.Cluster = c })
	h, _ := e.sites.ByID(1)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/raced"}
	// While this node waits for the lock, the holder stores the page.
	c.onLock = func() { c.mu.Lock(); c.shared[k] = sharedEntry(k, time.Now()); c.mu.Unlock() }
	out, cached, err := e.pipe.Fill(context.Background(), k, h, &h.Dimensions[0], "")
	if err != nil || !cached || out.Entry == nil {
		t.Fatalf("Fill = %+v cached %v err %v, want the holder's page", out, cached, err)
	}
	if n := e.r.calls.Load(); n != 0 || c.lookups != 2 || len(c.published) != 1 || c.published[0] != nil {
		t.Fatalf("renders %d lookups %d published %v, want no render, a second lookup, nothing published", n, c.lookups, c.published)
	}
	// Refresh always renders anew, under the lock, and publishes it.
	if _, err := e.pipe.Refresh(context.Background(), k, prerender.Recache); err != nil {
		t.Fatal(err)
	}
	if n := e.r.calls.Load(); n != 1 || len(c.published) != 2 || c.published[1] == nil {
		t.Fatalf("renders %d published %v after Refresh, want one render published", n, c.published)
	}
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestFailureReason(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("render https://x/: %w", context.DeadlineExceeded):   "render timed out",
		fmt.Errorf("render: %w", prerender.ErrUnavailable):              "browser unavailable",
		fmt.Errorf("%w: https://x/: 503", fill.ErrServerStatus):         "the page rendered with a server error status",
		errors.New("dial tcp 10.0.0.1:80: connection refused (secret)"): "render error",
	} {
		if got := fill.FailureReason(err); got != want {
			t.Errorf("FailureReason(%v) = %q, want %q", err, got, want)
		}
	}
}

// TestAnswerMiss: a crawler's miss is answered by the render, by a fresh
// entry found instead, by what is servable when the render fails, or not
// at all; a crawler that left gets the error without a second look.
func TestAnswerMiss(t *testing.T) {
	e := newEnv(t, func(o *fill.Options) { o.TTL, o.StaleTTL = time.Hour, time.Hour })
	h, _ := e.sites.ByID(1)
	d, _ := h.Dimension(1)
	key := func(u string) cachestore.Key { return cachestore.Key{HostID: 1, DimensionID: 1, URL: u} }
	ctx := context.Background()

	m := e.pipe.AnswerMiss(ctx, key("/fresh"), h, d, "", 5*time.Second)
	if m.State != fill.CacheMiss || m.Entry == nil || m.Err != nil || !m.Outcome.Stored {
		t.Fatalf("rendered: %+v", m)
	}
	if m := e.pipe.AnswerMiss(ctx, key("/fresh"), h, d, "", 5*time.Second); m.State != fill.CacheHit || m.Entry == nil {
		t.Fatalf("stored meanwhile: %+v, want the fresh entry as a HIT", m)
	}

	if m := e.pipe.AnswerMiss(ctx, key("/broken"), h, d, "", 5*time.Second); m.State != fill.CacheBypass || m.Entry != nil || m.Err == nil {
		t.Fatalf("failed, nothing stored: %+v, want BYPASS with the error", m)
	}
	stale := &cachestore.Entry{Key: key("/broken"), Status: 200, Header: http.Header{"Content-Type": {"text/html"}},
		Body: gzipped("<p>old</p>"), RenderedAt: time.Now().Add(-90 * time.Minute)}
	if err := e.store.Put(stale); err != nil {
		t.Fatal(err)
	}
	m = e.pipe.AnswerMiss(ctx, key("/broken"), h, d, "", 5*time.Second)
	if m.State != fill.CacheStale || m.Entry == nil || m.Err == nil {
		t.Fatalf("failed, a stale copy stored: %+v, want it served STALE with the error", m)
	}

	left, cancel := context.WithCancel(ctx)
	cancel()
	if m := e.pipe.AnswerMiss(left, key("/broken"), h, d, "", 5*time.Second); m.State != fill.CacheBypass || m.Entry != nil {
		t.Fatalf("crawler gone: %+v, want BYPASS without the stored copy", m)
	}
}

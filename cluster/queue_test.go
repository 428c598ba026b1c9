package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

func key(host int, u string) cachestore.Key {
	return cachestore.Key{HostID: host, DimensionID: 1, URL: u}
}

func TestQueueClaimOrderAndFinish(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	ctx := context.Background()
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Push(ctx, []cachestore.Key{key(1, "/n1"), key(1, "/n2"), key(2, "/n3")}, recache.Normal, now))
	must(a.Push(ctx, []cachestore.Key{key(2, "/h1")}, recache.High, now))
	must(a.Push(ctx, []cachestore.Key{key(1, "/later")}, recache.High, now.Add(time.Hour)))
	// A normal push of a key queued high yields; a high push of a normal one supersedes it.
	must(a.Push(ctx, []cachestore.Key{key(2, "/h1")}, recache.Normal, now))
	must(a.Push(ctx, []cachestore.Key{key(1, "/n2")}, recache.High, now))
	if err := a.Push(ctx, []cachestore.Key{key(9, "/x")}, recache.High, now); err == nil {
		t.Fatal("push of an unconfigured host succeeded")
	}
	if err := a.Push(ctx, []cachestore.Key{key(1, "/x")}, recache.Priority(7), now); err == nil {
		t.Fatal("push at an invalid level succeeded")
	}

	cs, paused, err := a.Claim(ctx, 10)
	must(err)
	if paused {
		t.Fatal("paused")
	}
	var got []string
	for _, c := range cs {
		got = append(got, c.Priority.String()+" "+c.Key.URL)
	}
	// High first (round-robin across hosts from a rotating start), the
	// hour-later entry not due, then normal.
	slices.Sort(got[:2])
	slices.Sort(got[2:])
	want := []string{"high /h1", "high /n2", "normal /n1", "normal /n3"}
	if !slices.Equal(got, want) {
		t.Fatalf("claimed %v, want %v", got, want)
	}
	st, err := a.Status(ctx)
	must(err)
	if st.Claimed != 4 || st.Queues[1][0].Total != 1 || st.Queues[1][0].DueNow != 0 {
		t.Fatalf("status %+v", st)
	}
	// One fails and goes back with its attempts; the others are done.
	must(a.Finish(ctx, cs[0], now, 2, nil))
	for _, c := range cs[1:] {
		must(a.Finish(ctx, c, time.Time{}, 0, nil))
	}
	again, _, err := a.Claim(ctx, 10)
	must(err)
	if len(again) != 1 || again[0].Key != cs[0].Key || again[0].Attempts != 2 {
		t.Fatalf("claimed again %+v, want %v with 2 attempts", again, cs[0].Key)
	}
	// A finish of a claim no longer held (settled, or lapsed and
	// reclaimed) changes nothing.
	must(a.Finish(ctx, cs[1], now, 1, nil))
	if more, _, _ := a.Claim(ctx, 10); len(more) != 0 {
		t.Fatalf("a stale finish requeued %+v", more)
	}
}

func TestQueuePauseIsClusterWide(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	b := testNode(t, mr, "b", nil)
	ctx := context.Background()
	if err := a.Push(ctx, []cachestore.Key{key(1, "/p")}, recache.High, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPaused(ctx, true); err != nil {
		t.Fatal(err)
	}
	cs, paused, err := b.Claim(ctx, 5)
	if err != nil || !paused || len(cs) != 0 {
		t.Fatalf("claim while paused: %v %v %v", cs, paused, err)
	}
	if err := b.SetPaused(ctx, false); err != nil {
		t.Fatal(err)
	}
	if cs, paused, _ := a.Claim(ctx, 5); paused || len(cs) != 1 {
		t.Fatalf("claim after resume: %v %v", cs, paused)
	}
}

// TestLapsedClaimsReturn: a node that claimed entries and died (stopped
// renewing) loses none of them: they return to the queue once the lease
// lapses, and another node renders them. A live node's claims are renewed.
func TestLapsedClaimsReturn(t *testing.T) {
	mr := miniredis.RunT(t)
	lease := func(o *Options) { o.ClaimLease = 1500 * time.Millisecond }
	dead := testNode(t, mr, "dead", lease) // never runs: never renews
	live := testNode(t, mr, "live", lease)
	start(t, live)
	ctx := context.Background()
	keys := []cachestore.Key{key(1, "/a"), key(1, "/b"), key(2, "/c")}
	if err := live.Push(ctx, keys, recache.Normal, time.Now()); err != nil {
		t.Fatal(err)
	}
	cs, _, err := dead.Claim(ctx, 2)
	if err != nil || len(cs) != 2 {
		t.Fatalf("dead claims %v %v", cs, err)
	}
	held, _, err := live.Claim(ctx, 5)
	if err != nil || len(held) != 1 {
		t.Fatalf("live claims %v %v", held, err)
	}
	waitFor(t, "the dead node's claims back in the queue", func() bool {
		st, err := live.Status(ctx)
		return err == nil && st.Queues[1][1].DueNow+st.Queues[2][1].DueNow == 2
	})
	// The live node's own claim outlived the lease: it was renewed.
	if st, _ := live.Status(ctx); st.Claimed != 1 {
		t.Fatalf("claimed %d, want the live node's 1", st.Claimed)
	}
	back, _, _ := live.Claim(ctx, 5)
	var got []cachestore.Key
	for _, c := range append(back, held...) {
		got = append(got, c.Key)
	}
	slices.SortFunc(got, func(a, b cachestore.Key) int { return cmpKey(a, b) })
	if !slices.Equal(got, keys) {
		t.Fatalf("keys %v, want %v", got, keys)
	}
}

func cmpKey(a, b cachestore.Key) int {
	switch {
	case a.URL < b.URL:
		return -1
	case a.URL > b.URL:
		return 1
	}
	return 0
}

// testSites builds hosts 1 and 2 with dimension 1.
func testSites(t *testing.T) *site.Table {
	t.Helper()
	var hosts []site.Host
	for _, id := range []int{1, 2} {
		hosts = append(hosts, site.Host{ID: id, Name: "h" + string(rune('0'+id)) + ".example",
			Origin:     &url.URL{Scheme: "http", Host: "127.0.0.1:1"},
			Dimensions: []site.Dimension{{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot"}}}})
	}
	tab, err := site.New(site.Options{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// renders records which scheduler rendered what; a scheduler with block
// set holds every render until the test ends.
type renders struct {
	mu sync.Mutex
	by map[string][]string
}

func (r *renders) refresh(name string, block bool) func(context.Context, cachestore.Key, prerender.Class) (fill.Outcome, error) {
	return func(ctx context.Context, k cachestore.Key, _ prerender.Class) (fill.Outcome, error) {
		r.mu.Lock()
		r.by[name] = append(r.by[name], k.URL)
		r.mu.Unlock()
		if block {
			<-ctx.Done()
			return fill.Outcome{}, ctx.Err()
		}
		return fill.Outcome{}, nil
	}
}

func (r *renders) of(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.by[name])
}

// testScheduler runs a recache scheduler over node with tabs free tabs.
func testScheduler(t *testing.T, node *Node, refresh func(context.Context, cachestore.Key, prerender.Class) (fill.Outcome, error), tabs int) *recache.Scheduler {
	t.Helper()
	return runScheduler(t, recache.Options{Refresh: refresh, Capacity: func() int { return tabs }, Shared: node})
}

// runScheduler builds a scheduler from opts (sites, journal dir, tick and
// logger filled in) and runs it until the test ends.
func runScheduler(t *testing.T, opts recache.Options) *recache.Scheduler {
	t.Helper()
	opts.Sites, opts.JournalDir, opts.Tick, opts.Logger = testSites(t), t.TempDir(), 20*time.Millisecond, testLogger(t)
	s, err := recache.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s
}

// TestRecacheQueuedOnOneNodeRendersOnAnother: a node with no free tab
// accepts recaches (journaled first), hands them to the shared queue, and a
// node with free tabs renders them; a pause on one node holds both.
func TestRecacheQueuedOnOneNodeRendersOnAnother(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	b := testNode(t, mr, "b", nil)
	r := &renders{by: map[string][]string{}}
	busy := testScheduler(t, a, r.refresh("a", false), 0)
	free := testScheduler(t, b, r.refresh("b", false), 2)

	busy.Pause()
	waitFor(t, "the pause to reach the other node", free.Paused)
	if _, err := busy.Enqueue([]cachestore.Key{key(1, "/1"), key(2, "/2"), key(1, "/3")}, recache.High); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "entries moved to the shared queue", func() bool {
		st, err := a.Status(context.Background())
		return err == nil && st.Queues[1][0].Total == 2 && st.Queues[2][0].Total == 1
	})
	if got := r.of("b"); len(got) != 0 {
		t.Fatalf("rendered while paused: %v", got)
	}
	free.Resume()
	waitFor(t, "the other node rendering all three", func() bool { return len(r.of("b")) == 3 })
	waitFor(t, "the resume to reach the first node", func() bool { return !busy.Paused() })
	if got := r.of("a"); len(got) != 0 {
		t.Fatalf("the busy node rendered %v", got)
	}
	waitFor(t, "every claim settled", func() bool {
		st, err := a.Status(context.Background())
		return err == nil && st.Claimed == 0
	})
}

// TestRecacheWhileRedisDownStaysLocalThenMoves: with Redis unreachable a
// recache is journaled and rendered by the node that took it; one accepted
// while the node has no tab moves to the shared queue once Redis is back.
func TestRecacheWhileRedisDownStaysLocalThenMoves(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", func(o *Options) { o.CallTimeout = 100 * time.Millisecond })
	r := &renders{by: map[string][]string{}}
	s := testScheduler(t, a, r.refresh("a", false), 0)
	mr.SetError("LOADING down for the test")
	if _, err := s.Enqueue([]cachestore.Key{key(1, "/while-down")}, recache.Normal); err != nil {
		t.Fatalf("Enqueue while Redis is down: %v", err)
	}
	st := s.Status()
	if st.Hosts[1].Normal.Total != 1 {
		t.Fatalf("local queue %+v, want the entry kept here", st.Hosts[1])
	}
	mr.SetError("")
	waitFor(t, "the entry moved to Redis", func() bool {
		cst, err := a.Status(context.Background())
		return err == nil && cst.Queues[1][1].Total == 1 && s.Status().Hosts[1].Normal.Total == 0
	})
}

// TestClaimReturnedOnShutdown: a scheduler stopped while it renders claimed
// entries gives them back at once, not after the lease.
func TestClaimReturnedOnShutdown(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", func(o *Options) { o.ClaimLease = time.Hour })
	ctx := context.Background()
	if err := a.Push(ctx, []cachestore.Key{key(1, "/slow")}, recache.High, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := &renders{by: map[string][]string{}}
	s, err := recache.New(recache.Options{
		Sites: testSites(t), Refresh: r.refresh("a", true), Capacity: func() int { return 1 },
		JournalDir: t.TempDir(), Shared: a, Tick: 20 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(rctx) }()
	waitFor(t, "the claimed render to start", func() bool { return len(r.of("a")) == 1 })
	cancel()
	<-done
	s.Close()
	st, err := a.Status(ctx)
	if err != nil || st.Claimed != 0 || st.Queues[1][0].DueNow != 1 {
		t.Fatalf("after shutdown: %+v %v, want the entry back in the high queue", st, err)
	}
}

// TestWarmupRenderedByTheCluster: a warmup started on a node with no free
// tab is rendered by another node; the starting node hears of every key,
// failures included; a cancelled warmup's keys leave the shared queue.
func TestWarmupRenderedByTheCluster(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	b := testNode(t, mr, "b", nil)
	start(t, a)
	start(t, b)
	r := &renders{by: map[string][]string{}}
	starter := testScheduler(t, a, r.refresh("a", false), 0)
	fails := func(ctx context.Context, k cachestore.Key, c prerender.Class) (fill.Outcome, error) {
		r.refresh("b", false)(ctx, k, c)
		if k.URL == "/broken" {
			return fill.Outcome{}, errors.New("render failed")
		}
		return fill.Outcome{Entry: &cachestore.Entry{Key: k, RenderedAt: time.Now()}, Stored: true}, nil
	}
	s := runScheduler(t, recache.Options{Refresh: fails, Capacity: func() int { return 2 }, MaxAttempts: 1, Shared: b})

	keys := []cachestore.Key{key(1, "/w1"), key(2, "/w2"), key(1, "/broken"), key(1, "/w1")}
	var mu sync.Mutex
	got := map[string]string{}
	werr := starter.Warm(ctxTimeout(t, 20*time.Second), keys, func(k cachestore.Key, err error) {
		mu.Lock()
		defer mu.Unlock()
		got[k.URL] = fmt.Sprint(err)
	})
	if werr != nil {
		t.Fatalf("Warm: %v", werr)
	}
	want := map[string]string{"/w1": "<nil>", "/w2": "<nil>", "/broken": "render failed"}
	if !maps.Equal(got, want) {
		t.Fatalf("warm results %v, want %v", got, want)
	}
	if got := r.of("a"); len(got) != 0 {
		t.Fatalf("the busy starter rendered %v", got)
	}

	// Cancelled: its keys leave the shared queue. The other node is paused
	// so that nothing renders them first.
	s.Pause()
	wctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- starter.Warm(wctx, []cachestore.Key{key(1, "/never")}, nil) }()
	waitFor(t, "the warm entry queued", func() bool {
		st, err := a.Status(context.Background())
		return err == nil && st.Queues[1][2].Total == 1
	})
	stop()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Warm = %v", err)
	}
	if st, _ := a.Status(context.Background()); st.Queues[1][2].Total != 0 {
		t.Fatalf("a cancelled warmup left %+v", st.Queues[1])
	}
}

package recache

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/internal/promcheck"
	"github.com/prismproxy/prism/prerender"
)

func TestParsePriority(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Priority
		err  bool
	}{
		{"high", High, false}, {"normal", Normal, false}, {"autorecache", Auto, false},
		{"HIGH", 0, true}, {"", 0, true}, {"low", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePriority(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParsePriority(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.err)
			}
			if err == nil && got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestPriorityOrder(t *testing.T) {
	f := newFixture(t, 1, 1, nil, nil)
	f.run(t)
	// Autorecache entry already due (rendered 13h ago, interval 12h).
	f.s.Track(&cachestore.Entry{Key: key(1, 1, "/auto"), RenderedAt: f.clk.Now().Add(-13 * time.Hour)})
	mustEnqueue(t, f.s, Normal, key(1, 1, "/normal1"), key(1, 1, "/normal2"))
	mustEnqueue(t, f.s, High, key(1, 1, "/high"))
	for range 4 {
		f.step(t)
	}
	got := urls(f.ref.Calls())
	want := []string{"/high", "/normal1", "/normal2", "/auto"}
	if !slices.Equal(got, want) {
		t.Fatalf("render order %v, want %v", got, want)
	}
}

func urls(keys []cachestore.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.URL)
	}
	return out
}

func TestFairnessAcrossHosts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		want     []int // host of each render, in order
	}{
		{"one per tick", 1, []int{1, 2, 3, 1, 2, 3, 1, 1, 1}},
		{"three per tick", 3, []int{1, 2, 3, 1, 2, 3, 1, 1, 1}},
		{"two per tick", 2, []int{1, 2, 3, 1, 2, 3, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := &refresher{}
			f := newFixture(t, 3, tc.capacity, ref, func(o *Options) { o.Workers = 1 })
			f.run(t)
			for i := range 5 {
				mustEnqueue(t, f.s, Normal, key(1, 1, fmt.Sprintf("/a%d", i)))
			}
			for i := range 2 {
				mustEnqueue(t, f.s, Normal, key(2, 1, fmt.Sprintf("/b%d", i)), key(3, 1, fmt.Sprintf("/c%d", i)))
			}
			for range 9 {
				f.step(t)
			}
			var hosts []int
			for _, k := range ref.Calls() {
				hosts = append(hosts, k.HostID)
			}
			// One worker renders in dispatch order.
			if !slices.Equal(hosts, tc.want) {
				t.Fatalf("hosts served %v, want %v", hosts, tc.want)
			}
		})
	}
}

func TestHighBeforeNormalAcrossHosts(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 2, 4, ref, func(o *Options) { o.Workers = 1 })
	f.run(t)
	mustEnqueue(t, f.s, Normal, key(1, 1, "/n1"), key(1, 1, "/n2"), key(2, 1, "/n3"))
	mustEnqueue(t, f.s, High, key(2, 1, "/h1"), key(2, 2, "/h2"))
	f.step(t)
	got := urls(ref.Calls())
	want := []string{"/h1", "/h2", "/n1", "/n3"}
	if !slices.Equal(got, want) {
		t.Fatalf("first tick rendered %v, want %v", got, want)
	}
}

func TestCapacityLimit(t *testing.T) {
	t.Run("capacity one never runs two", func(t *testing.T) {
		// The refresher has one tab, as the renderer would: a render the
		// scheduler starts while the first has not yet taken its tab (the
		// capacity figure lags by that long) is refused, not run.
		ref := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 100), tabs: 1}
		f := newFixture(t, 2, 1, ref, func(o *Options) { o.Workers = 4 })
		f.run(t)
		var keys []cachestore.Key
		for i := range 10 {
			keys = append(keys, key(1+i%2, 1, fmt.Sprintf("/p%d", i)))
		}
		mustEnqueue(t, f.s, High, keys...)
		for i := range 10 {
			for range 3 { // extra ticks must not add work while one renders
				f.s.Tick(f.clk.Now())
			}
			<-ref.started
			waitFor(t, fmt.Sprintf("render %d alone in the internal queue", i), func() bool {
				return f.s.Status().InternalQueue == 1
			})
			ref.gate <- struct{}{}
			f.idle(t)
		}
		if got := ref.MaxInFlight(); got != 1 {
			t.Fatalf("max renders in flight %d, want 1", got)
		}
		if got := len(ref.Calls()); got != 10 {
			t.Fatalf("renders %d, want 10", got)
		}
	})
	t.Run("capacity zero dispatches nothing", func(t *testing.T) {
		ref := &refresher{}
		f := newFixture(t, 1, 0, ref, nil)
		f.run(t)
		mustEnqueue(t, f.s, High, key(1, 1, "/x"))
		f.step(t)
		if n := len(ref.Calls()); n != 0 {
			t.Fatalf("renders %d with zero capacity", n)
		}
		f.cap.Set(3)
		f.step(t)
		if n := len(ref.Calls()); n != 1 {
			t.Fatalf("renders %d after capacity returned, want 1", n)
		}
	})
	t.Run("queue bound caps a tick", func(t *testing.T) {
		ref := &refresher{gate: make(chan struct{})}
		f := newFixture(t, 1, 100, ref, func(o *Options) { o.QueueSize = 3; o.Workers = 1 })
		f.run(t)
		var keys []cachestore.Key
		for i := range 10 {
			keys = append(keys, key(1, 1, fmt.Sprintf("/q%d", i)))
		}
		mustEnqueue(t, f.s, Normal, keys...)
		f.s.Tick(f.clk.Now())
		st := f.s.Status()
		if st.InternalQueue != 3 || st.InternalQueueMax != 3 {
			t.Fatalf("internal queue %d/%d, want 3/3", st.InternalQueue, st.InternalQueueMax)
		}
		if got := st.Hosts[1].Normal.Total; got != 7 {
			t.Fatalf("normal queue %d, want 7", got)
		}
		for range 3 {
			ref.gate <- struct{}{}
		}
		f.idle(t)
	})
}

func TestDeduplicationAndSupersede(t *testing.T) {
	f := newFixture(t, 1, 0, nil, nil) // no capacity: everything stays queued
	k := key(1, 1, "/a")
	n, err := f.s.Enqueue([]cachestore.Key{k, k, key(1, 2, "/a"), k}, Normal)
	if err != nil || n != 2 {
		t.Fatalf("Enqueue = %d, %v; want 2 distinct", n, err)
	}
	mustEnqueue(t, f.s, Normal, k)
	assertQueues(t, f.s, 1, HostStatus{Normal: QueueStatus{2, 2}})

	mustEnqueue(t, f.s, High, k) // supersedes normal
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{1, 1}, Normal: QueueStatus{1, 1}})

	mustEnqueue(t, f.s, Normal, k) // lower: no change
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{1, 1}, Normal: QueueStatus{1, 1}})

	// An autorecache entry due in the future; Track moves it, high takes it
	// over keeping the earlier due time.
	ka := key(1, 1, "/auto")
	f.s.Track(&cachestore.Entry{Key: ka, RenderedAt: f.clk.Now()})
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{1, 1}, Normal: QueueStatus{1, 1}, Auto: QueueStatus{1, 0}})
	f.s.Track(&cachestore.Entry{Key: ka, RenderedAt: f.clk.Now().Add(-24 * time.Hour)})
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{1, 1}, Normal: QueueStatus{1, 1}, Auto: QueueStatus{1, 1}})
	mustEnqueue(t, f.s, Auto, ka) // same level, already due: unchanged
	mustEnqueue(t, f.s, High, ka)
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{2, 2}, Normal: QueueStatus{1, 1}})
	// Track does not demote a high entry.
	f.s.Track(&cachestore.Entry{Key: ka, RenderedAt: f.clk.Now()})
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{2, 2}, Normal: QueueStatus{1, 1}})
}

func assertQueues(t *testing.T, s *Scheduler, host int, want HostStatus) {
	t.Helper()
	if got := s.Status().Hosts[host]; got != want {
		t.Fatalf("host %d queues %+v, want %+v", host, got, want)
	}
}

func TestEnqueueInvalid(t *testing.T) {
	f := newFixture(t, 1, 0, nil, nil)
	for _, tc := range []struct {
		name string
		keys []cachestore.Key
		p    Priority
		want error
	}{
		{"unknown host", []cachestore.Key{key(1, 1, "/ok"), key(9, 1, "/x")}, High, ErrInvalidKey},
		{"unknown dimension", []cachestore.Key{key(1, 7, "/x")}, High, ErrInvalidKey},
		{"empty url", []cachestore.Key{key(1, 1, "")}, High, ErrInvalidKey},
		{"huge url", []cachestore.Key{key(1, 1, "/"+string(make([]byte, maxURL)))}, High, ErrInvalidKey},
		{"bad priority", []cachestore.Key{key(1, 1, "/x")}, Priority(9), ErrPriority},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.s.Enqueue(tc.keys, tc.p); !errors.Is(err, tc.want) {
				t.Fatalf("Enqueue err %v, want %v", err, tc.want)
			}
			assertQueues(t, f.s, 1, HostStatus{})
		})
	}
}

func TestRetryBackoffThenDrop(t *testing.T) {
	boom := errors.New("render failed")
	ref := &refresher{result: func(cachestore.Key, int) error { return boom }}
	f := newFixture(t, 1, 1, ref, nil) // MaxAttempts 3, Backoff 30s
	f.run(t)
	mustEnqueue(t, f.s, High, key(1, 1, "/flaky"))

	f.step(t) // attempt 1 fails: retry after 30s
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{1, 0}})
	f.clk.Advance(29 * time.Second)
	f.step(t)
	if n := len(ref.Calls()); n != 1 {
		t.Fatalf("renders %d before the backoff elapsed, want 1", n)
	}
	f.clk.Advance(time.Second)
	f.step(t) // attempt 2 fails: retry after 2m
	f.clk.Advance(2*time.Minute - time.Second)
	f.step(t)
	if n := len(ref.Calls()); n != 2 {
		t.Fatalf("renders %d before the second backoff elapsed, want 2", n)
	}
	f.clk.Advance(time.Second)
	f.step(t) // attempt 3 fails: dropped
	if n := len(ref.Calls()); n != 3 {
		t.Fatalf("renders %d, want 3", n)
	}
	assertQueues(t, f.s, 1, HostStatus{})
	if r, d := f.s.m.retry.Get(), f.s.m.dropped.Get(); r != 2 || d != 1 {
		t.Fatalf("retry %d dropped %d, want 2 and 1", r, d)
	}
	// Dropped entries are done in the journal: nothing comes back.
	f.s.Close()
	g := reopen(t, f)
	assertQueues(t, g, 1, HostStatus{})
}

func TestNoCapacityRequeuesWithoutAttempt(t *testing.T) {
	ref := &refresher{result: func(_ cachestore.Key, call int) error {
		if call <= 5 {
			return fmt.Errorf("render: %w", prerender.ErrNoCapacity)
		}
		return nil
	}}
	f := newFixture(t, 1, 1, ref, nil)
	f.run(t)
	mustEnqueue(t, f.s, Normal, key(1, 1, "/busy"))
	for range 6 {
		f.step(t) // due again at once: no backoff
	}
	if n := len(ref.Calls()); n != 6 {
		t.Fatalf("renders %d, want 6", n)
	}
	if ok, d := f.s.m.ok.Get(), f.s.m.dropped.Get(); ok != 1 || d != 0 {
		t.Fatalf("ok %d dropped %d, want 1 and 0", ok, d)
	}
	assertQueues(t, f.s, 1, HostStatus{})
}

func TestPauseResume(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 1, 4, ref, nil)
	f.run(t)
	f.s.Pause()
	if !f.s.Paused() || !f.s.Status().Paused {
		t.Fatal("not paused after Pause")
	}
	mustEnqueue(t, f.s, High, key(1, 1, "/a"), key(1, 2, "/a"))
	f.step(t)
	if n := len(ref.Calls()); n != 0 {
		t.Fatalf("%d renders while paused", n)
	}
	if st := f.s.Status(); !st.LastTick.Equal(f.clk.Now()) {
		t.Fatalf("LastTick %v while paused, want %v", st.LastTick, f.clk.Now())
	}
	assertQueues(t, f.s, 1, HostStatus{High: QueueStatus{2, 2}})

	// The paused state survives a restart.
	f.s.Close()
	g := reopen(t, f)
	if !g.Paused() {
		t.Fatal("restarted scheduler is not paused")
	}
	g.Resume()
	if g.Paused() {
		t.Fatal("paused after Resume")
	}
	g.Close()
	h := reopen(t, f)
	if h.Paused() {
		t.Fatal("paused after Resume and restart")
	}
}

// reopen builds a new scheduler on f's journal dir, as after a restart.
func reopen(t *testing.T, f *fixture) *Scheduler {
	t.Helper()
	s, err := New(Options{
		Sites: f.s.opts.Sites, Refresh: f.ref.Refresh, Capacity: f.cap.Get,
		JournalDir: f.dir, Now: f.clk.Now, Tick: 24 * time.Hour, Logger: quiet,
	})
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTrackDueAtRenderedAtPlusInterval(t *testing.T) {
	f := newFixture(t, 2, 0, nil, nil) // host 2 has a 1h override
	now := f.clk.Now()
	f.s.Track(&cachestore.Entry{Key: key(1, 1, "/a"), RenderedAt: now.Add(-time.Hour)}) // due now+11h
	f.s.Track(&cachestore.Entry{Key: key(2, 1, "/b"), RenderedAt: now})                 // due now+1h
	f.s.Track(&cachestore.Entry{Key: key(9, 1, "/unknown"), RenderedAt: now})           // ignored
	f.s.Track(nil)
	for _, tc := range []struct {
		at         time.Duration
		due1, due2 int
	}{
		{0, 0, 0}, {time.Hour - time.Second, 0, 0}, {time.Hour, 0, 1},
		{11*time.Hour - time.Second, 0, 1}, {11 * time.Hour, 1, 1},
	} {
		f.clk = &clock{t: now.Add(tc.at)}
		f.s.opts.Now = f.clk.Now
		st := f.s.Status()
		if got := st.Hosts[1].Auto; got != (QueueStatus{1, tc.due1}) {
			t.Errorf("at +%v host 1 auto %+v, want due %d", tc.at, got, tc.due1)
		}
		if got := st.Hosts[2].Auto; got != (QueueStatus{1, tc.due2}) {
			t.Errorf("at +%v host 2 auto %+v, want due %d", tc.at, got, tc.due2)
		}
	}
}

func TestTrackWhileRenderingSchedulesNext(t *testing.T) {
	// The recache's own store calls Track (proxy OnStore) while the entry
	// is in flight: after the render the entry waits for its next period.
	var f *fixture
	ref := &refresher{}
	ref.result = func(k cachestore.Key, _ int) error {
		f.s.Track(&cachestore.Entry{Key: k, RenderedAt: f.clk.Now()})
		return nil
	}
	f = newFixture(t, 1, 1, ref, nil)
	f.run(t)
	mustEnqueue(t, f.s, High, key(1, 1, "/a"))
	f.step(t)
	assertQueues(t, f.s, 1, HostStatus{Auto: QueueStatus{1, 0}})
	f.clk.Advance(12 * time.Hour)
	f.step(t)
	if n := len(ref.Calls()); n != 2 {
		t.Fatalf("renders %d, want the autorecache 12h later too", n)
	}
	// A high request arriving mid-render is rendered again afterwards.
	ref2 := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 1)}
	g := newFixture(t, 1, 1, ref2, nil)
	g.run(t)
	mustEnqueue(t, g.s, Normal, key(1, 1, "/b"))
	g.s.Tick(g.clk.Now())
	<-ref2.started
	mustEnqueue(t, g.s, High, key(1, 1, "/b"))
	ref2.gate <- struct{}{}
	g.idle(t)
	assertQueues(t, g.s, 1, HostStatus{High: QueueStatus{1, 1}})
}

func TestForget(t *testing.T) {
	boom := errors.New("boom")
	ref := &refresher{gate: make(chan struct{}), started: make(chan cachestore.Key, 1),
		result: func(cachestore.Key, int) error { return boom }}
	f := newFixture(t, 1, 1, ref, nil)
	f.run(t)
	mustEnqueue(t, f.s, High, key(1, 1, "/a"), key(1, 1, "/b"), key(1, 2, "/c"))
	f.s.Tick(f.clk.Now())
	inflight := <-ref.started
	f.s.Forget(key(1, 1, "/a"), key(1, 1, "/b"), key(1, 2, "/c"), key(1, 1, "/never"))
	ref.gate <- struct{}{} // the in-flight render fails but is not retried
	f.idle(t)
	assertQueues(t, f.s, 1, HostStatus{})
	if inflight.URL != "/a" {
		t.Fatalf("first render %v, want /a", inflight)
	}
	f.s.Close()
	g := reopen(t, f)
	assertQueues(t, g, 1, HostStatus{})
}

func TestMetrics(t *testing.T) {
	set := metricdoc.NewSet()
	f := newFixture(t, 2, 1, nil, func(o *Options) { o.Metrics = set })
	f.run(t)
	mustEnqueue(t, f.s, High, key(1, 1, "/a"), key(2, 1, "/b"))
	f.step(t)
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, want := range []string{
		`prism_recache_enqueued_total{priority="high"} 2`,
		`prism_recache_renders_total{result="ok"} 1`,
		`prism_recache_renders_total{result="dropped"} 0`,
		`prism_recache_queue_size{host="1",priority="high"} 0`,
		`prism_recache_queue_size{host="2",priority="high"} 1`,
		`prism_recache_internal_queue_size 0`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	if _, problems := promcheck.Check(b.String()); len(problems) > 0 {
		t.Errorf("metrics not as Prometheus wants them: %v", problems)
	}
}

func TestOfferQueuesAutorecacheWithoutBlocking(t *testing.T) {
	t.Run("queued by Run, due now", func(t *testing.T) {
		f := newFixture(t, 1, 0, nil, nil)
		f.run(t)
		if !f.s.Offer(key(1, 1, "/stale")) {
			t.Fatal("Offer refused with an empty buffer")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := f.s.Status().Hosts[1].Auto
			if st.Total == 1 && st.DueNow == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("offered key not queued as a due autorecache: %+v", st)
			}
			time.Sleep(time.Millisecond) // polling Run's progress
		}
	})
	t.Run("full buffer drops instead of blocking", func(t *testing.T) {
		f := newFixture(t, 1, 0, nil, nil) // Run not started: nothing drains
		accepted := 0
		for i := range 2000 {
			if f.s.Offer(key(1, 1, fmt.Sprintf("/s%d", i))) {
				accepted++
			}
		}
		if accepted == 0 || accepted == 2000 {
			t.Errorf("accepted %d of 2000 offers with nothing draining, want a bounded number", accepted)
		}
	})
}

func TestServedOnlyAutorecache(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 1, 10, ref, func(o *Options) { o.ServedOnly = true })
	f.run(t)
	asked, unasked := key(1, 1, "/asked"), key(1, 1, "/typo-nobody-asks-again")
	for _, k := range []cachestore.Key{asked, unasked} {
		f.s.Track(&cachestore.Entry{Key: k, RenderedAt: f.clk.Now().Add(-13 * time.Hour)})
	}
	f.s.Served(asked)
	f.step(t)
	if got := urls(ref.Calls()); !slices.Equal(got, []string{"/asked"}) {
		t.Fatalf("autorecache rendered %v, want only /asked", got)
	}
	if st := f.s.Status().Hosts[1].Auto; st.Total != 0 {
		t.Errorf("autorecache queue %+v: the unasked key should be dropped", st)
	}
	// The mark is used up: without another crawler request, no further render.
	f.s.Track(&cachestore.Entry{Key: asked, RenderedAt: f.clk.Now().Add(-13 * time.Hour)})
	f.step(t)
	if n := len(ref.Calls()); n != 1 {
		t.Errorf("renders %d after the mark was used, want 1", n)
	}
	// High and normal requests are never subject to it.
	mustEnqueue(t, f.s, High, unasked)
	f.step(t)
	if n := len(ref.Calls()); n != 2 {
		t.Errorf("renders %d after a high request, want 2", n)
	}
}

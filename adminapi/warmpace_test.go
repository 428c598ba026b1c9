package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

// warmSpy wraps Options.Warm: it counts the keys handed to it and not
// settled yet (the most at once, too) and records the clock at each call.
type warmSpy struct {
	warm func(ctx context.Context, keys []cachestore.Key, done func(cachestore.Key, error)) error
	now  func() time.Time

	mu          sync.Mutex
	outstanding int
	most        int
	calls       []warmCall
}

type warmCall struct {
	key cachestore.Key
	at  time.Time
}

func (w *warmSpy) Warm(ctx context.Context, keys []cachestore.Key, done func(cachestore.Key, error)) error {
	w.mu.Lock()
	w.outstanding += len(keys)
	w.most = max(w.most, w.outstanding)
	for _, k := range keys {
		w.calls = append(w.calls, warmCall{k, w.now()})
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.outstanding -= len(keys)
		w.mu.Unlock()
	}()
	return w.warm(ctx, keys, done)
}

func (w *warmSpy) state() (outstanding, most int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.outstanding, w.most
}

func withSpy(spy *warmSpy) envOption {
	return func(o *Options, e *env) {
		spy.warm = o.Warm
		if spy.now == nil {
			spy.now = time.Now
		}
		o.Warm = spy.Warm
	}
}

func pages(host string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("https://%s/p%d", host, i))
	}
	return out
}

func TestWarmupConcurrency(t *testing.T) {
	// The scheduler renders 2 at once: 1 limits it further, 3 and 8 are
	// handed over but wait in its queue, 0 hands over all 12 at once.
	for _, n := range []int{1, 2, 3, 8, 0} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			spy := &warmSpy{}
			e := newEnv(t, func(o *Options, _ *env) { o.Warmup.Concurrency = n }, withSpy(spy))
			want := n
			if n == 0 {
				want = 12
			}
			e.block = make(chan struct{})
			e.setFile("/s.xml", urlset(pages("example.com", 6)...)) // 12 keys
			e.startWarmup("https://example.com/s.xml")
			waitFor(t, fmt.Sprintf("%d keys handed over", want), func() bool { o, _ := spy.state(); return o == want })
			waitFor(t, "renders started", func() bool { return e.refreshes.Load() == int64(min(want, 2)) })
			if _, most := spy.state(); most != want {
				t.Fatalf("%d keys unsettled at once, want %d", most, want)
			}
			close(e.block)
			st := e.waitWarmupDone()
			if st.Processed != 12 || st.Errors != 0 {
				t.Fatalf("status = %+v, want 12 processed", st)
			}
			if _, most := spy.state(); most != want {
				t.Errorf("%d keys unsettled at once, want at most %d", most, want)
			}
		})
	}
}

// fakeClock is a clock the warmup's Sleep moves.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.sleeps = append(c.sleeps, d)
	return ctx.Err()
}

func TestWarmupRate(t *testing.T) {
	tests := []struct {
		rate  float64
		every time.Duration // 0: no pacing
	}{
		{0, 0}, {4, 250 * time.Millisecond}, {0.5, 2 * time.Second}, {1000, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			spy := &warmSpy{now: clk.now}
			e := newEnv(t, func(o *Options, _ *env) {
				o.Now = clk.now
				o.Warmup.Rate = tt.rate
				o.Warmup.Sleep = clk.sleep
			}, withSpy(spy))
			// 5 URLs with 2 dimensions, 2 with one: 7 URLs, 12 renders.
			e.setFile("/s.xml", urlset(append(pages("example.com", 5), pages("shop.test", 2)...)...))
			start := clk.now()
			e.startWarmup("https://example.com/s.xml")
			if st := e.waitWarmupDone(); st.Processed != 12 || st.Errors != 0 {
				t.Fatalf("status = %+v", st)
			}
			spy.mu.Lock()
			calls := append([]warmCall(nil), spy.calls...)
			spy.mu.Unlock()
			if len(calls) != 12 {
				t.Fatalf("%d keys handed over, want 12", len(calls))
			}
			// URL i (in sitemap order) is never handed over before
			// start + i intervals (the spy reads the clock on Warm's
			// goroutine, which may run a little later: a lower bound).
			index := map[cachestore.Key]int{}
			for i, u := range append(pages("example.com", 5), pages("shop.test", 2)...) {
				h, norm, err := e.sites.Resolve(u, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range h.Dimensions {
					index[cachestore.Key{HostID: h.ID, DimensionID: d.ID, URL: norm}] = i
				}
			}
			for _, c := range calls {
				if earliest := start.Add(time.Duration(index[c.key]) * tt.every); c.at.Before(earliest) {
					t.Errorf("%v handed over at +%v, before +%v", c.key, c.at.Sub(start), earliest.Sub(start))
				}
			}
			wantSleeps := 6
			if tt.every == 0 {
				wantSleeps = 0
			}
			clk.mu.Lock()
			sleeps := clk.sleeps
			clk.mu.Unlock()
			if len(sleeps) != wantSleeps {
				t.Errorf("%d sleeps %v, want %d", len(sleeps), sleeps, wantSleeps)
			}
			for _, d := range sleeps {
				if d != tt.every {
					t.Errorf("slept %v, want %v between URLs", d, tt.every)
				}
			}
		})
	}
}

func TestWarmupMaxURLs(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *env) { o.Warmup.MaxURLs = 3 })
	e.setFile("/i.xml", sitemapindex("https://example.com/a.xml", "https://example.com/b.xml"))
	e.setFile("/a.xml", urlset(pages("example.com", 2)...))
	e.setFile("/b.xml", urlset("https://example.com/p1", "https://shop.test/x", "https://shop.test/y"))
	e.startWarmup("https://example.com/i.xml")
	st := e.waitWarmupDone()
	if st.Total != 2*2+1 || st.Errors != 0 || !st.Truncated || st.ErrorMessage != nil {
		t.Fatalf("status = %+v, want 3 URLs (5 renders), truncated, no error", st)
	}
	e.setFile("/c.xml", urlset(pages("example.com", 3)...))
	e.startWarmup("https://example.com/c.xml")
	if st := e.waitWarmupDone(); st.Truncated || st.Total != 6 {
		t.Fatalf("status = %+v, want exactly max_urls, not truncated", st)
	}
}

func TestWarmupRobots(t *testing.T) {
	robots := strings.Join([]string{
		"User-agent: *",
		"Disallow: /private",
		"Sitemap: https://example.com/s1.xml",
		"sitemap:https://shop.test/s2.xml.gz # the shop",
		"SITEMAP:   https://www.example.com/idx.xml  ",
		"Sitemap: https://evil.com/s3.xml",         // off the configured hosts: ignored
		"Sitemap: http://127.0.0.1:1/internal.xml", // the same
		"Sitemap: https://example.com/s1.xml",      // listed twice: fetched once
		"Sitemap: https://example.com/missing.xml", // fails: counted and listed
		"Sitemap:",
	}, "\r\n")
	for _, root := range []string{"https://example.com/", "https://example.com", "https://www.example.com/robots.txt"} {
		t.Run(root, func(t *testing.T) {
			e := newEnv(t)
			e.setFile("/robots.txt", []byte(robots))
			e.setFile("/s1.xml", urlset("https://example.com/a", "https://example.com/b"))
			e.setFile("/s2.xml.gz", gz(urlset("https://shop.test/c")))
			e.setFile("/idx.xml", sitemapindex("https://example.com/s4.xml"))
			e.setFile("/s4.xml", urlset("https://example.com/d"))
			e.setFile("/s3.xml", urlset("https://example.com/never"))
			e.startWarmup(root)
			st := e.waitWarmupDone()
			if st.ErrorMessage != nil || st.Total != 3*2+1+1 || st.Processed != st.Total || st.Errors != 1 {
				t.Fatalf("status = %+v, want a, b, d x 2 dimensions + c + the missing sitemap", st)
			}
			if len(st.FailedURLs) != 1 || st.FailedURLs[0].URL != "https://example.com/missing.xml" || !strings.Contains(st.FailedURLs[0].Reason, "404") {
				t.Errorf("failed_urls %+v, want the missing sitemap with its 404", st.FailedURLs)
			}
			for _, k := range append(keysFor(1, []int{1, 2}, "/a", "/b", "/d"), keysFor(2, []int{7}, "/c")...) {
				if !e.has(k) {
					t.Errorf("%v not warmed", k)
				}
			}
			if e.has(cachestore.Key{HostID: 1, DimensionID: 1, URL: "/never"}) {
				t.Error("an off-host sitemap was fetched")
			}
		})
	}

	fatal := []struct{ name, robots, want string }{
		{"missing robots.txt", "", "robots.txt https://example.com/robots.txt: status 404"},
		{"no sitemap lines", "User-agent: *\nDisallow:\n", "lists no sitemap on a configured host"},
		{"only off-host sitemaps", "Sitemap: https://evil.com/s.xml\nSitemap: /relative.xml\n", "lists no sitemap on a configured host"},
		{"every sitemap fails", "Sitemap: https://example.com/gone1.xml\nSitemap: https://example.com/gone2.xml\n", "none of the 2 sitemaps robots.txt lists could be read"},
		{"too large", "Sitemap: https://example.com/s1.xml\n" + strings.Repeat("# padding\n", 20), "too large"},
	}
	for _, tt := range fatal {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.srv.limits.maxBytes = 100
			if tt.robots != "" {
				e.setFile("/robots.txt", []byte(tt.robots))
			}
			e.startWarmup("https://example.com/")
			st := e.waitWarmupDone()
			if st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, tt.want) {
				t.Fatalf("status = %+v, want error_message containing %q", st, tt.want)
			}
			if e.refreshes.Load() != 0 {
				t.Error("a failed warmup rendered pages")
			}
		})
	}

	// A path or a query is a sitemap, not a site root.
	e := newEnv(t)
	e.setFile("/robots.txt", []byte("Sitemap: https://example.com/s1.xml\n"))
	e.setFile("/s1.xml", urlset("https://example.com/a"))
	e.startWarmup("https://example.com/?sitemap=1")
	if st := e.waitWarmupDone(); st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, "status 404") {
		t.Fatalf("status = %+v: a root with a query must be fetched as a sitemap", st)
	}
}

// syncBuffer is a log sink for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestWarmupFailedURLs(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, func(o *Options, _ *env) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	e.status5xx = "/down"
	e.failURL = "/broken"
	locs := []string{"https://example.com/down", "https://example.com/broken", "https://example.com/ok"}
	for i := range 150 {
		locs = append(locs, fmt.Sprintf("https://evil.com/%d", i))
	}
	e.setFile("/s.xml", urlset(locs...))
	e.startWarmup("https://example.com/s.xml")
	st := e.waitWarmupDone()
	if st.Errors != 150+4 || st.Processed != st.Total || st.Total != 150+6 {
		t.Fatalf("status = %+v, want 154 errors", st)
	}
	if len(st.FailedURLs) != maxFailedListed {
		t.Fatalf("%d failed urls listed, want %d", len(st.FailedURLs), maxFailedListed)
	}
	// Skipped URLs are found before any render: the list holds them first.
	for i, f := range st.FailedURLs {
		if want := fmt.Sprintf("https://evil.com/%d", i); f.URL != want || !strings.Contains(f.Reason, "unknown host") {
			t.Errorf("failed_urls[%d] = %+v, want %s with its reason", i, f, want)
		}
	}
	warns := logs.lines(t, "admin: warmup url failed")
	if len(warns) != maxFailedListed {
		t.Errorf("%d failed-url log lines, want %d", len(warns), maxFailedListed)
	}
	for _, w := range warns {
		if w["level"] != "WARN" || w["url"] == nil || w["reason"] == nil {
			t.Errorf("log line %v", w)
		}
	}
	more := logs.lines(t, "admin: warmup: more urls failed than listed")
	if len(more) != 1 || more[0]["unlisted"] != 54.0 {
		t.Errorf("count line %v, want one with unlisted=54", more)
	}

	// Render failures: status and dimension, when the list has room.
	e.setFile("/t.xml", urlset("https://example.com/down", "https://example.com/broken", "https://example.com/ok"))
	e.startWarmup("https://example.com/t.xml")
	st = e.waitWarmupDone()
	got := map[string]failedURL{}
	for _, f := range st.FailedURLs {
		got[f.URL+" "+f.Dimension] = f
	}
	if st.Errors != 4 || len(got) != 4 {
		t.Fatalf("status = %+v, want the 2 failing URLs in 2 dimensions", st)
	}
	for _, dim := range []string{"desktop", "mobile"} {
		if f := got["https://example.com/down "+dim]; f.Status != 503 || !strings.Contains(f.Reason, "server error status") {
			t.Errorf("%s /down listed as %+v, want status 503", dim, f)
		}
		if f := got["https://example.com/broken "+dim]; f.Status != 0 || !strings.Contains(f.Reason, "browser unavailable") {
			t.Errorf("%s /broken listed as %+v, want the render's error", dim, f)
		}
	}
}

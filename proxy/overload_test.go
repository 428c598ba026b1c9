package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
)

// blockRender returns a render func that blocks until release is closed
// (or its ctx ends) and a channel that receives each started URL.
func blockRender(release <-chan struct{}) (func(context.Context, prerender.Request) (*prerender.Result, error), <-chan string) {
	started := make(chan string, 16)
	return func(ctx context.Context, req prerender.Request) (*prerender.Result, error) {
		started <- req.URL
		select {
		case <-release:
			return &prerender.Result{Status: 200, HTML: []byte("<html><body>rendered</body></html>")}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, started
}

func TestMaxRendersBypassesBeyondBound(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.MaxRenders = 1 })
	release := make(chan struct{})
	fn, started := blockRender(release)
	h.render.set(fn)

	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- h.do(http.MethodGet, "/a", uaGooglebot) }()
	<-started

	// A second URL would be a second render: beyond the bound it gets the
	// origin's own page at once.
	w := h.do(http.MethodGet, "/b", uaGooglebot)
	if got := w.Header().Get("X-Prism-Cache"); got != "BYPASS" {
		t.Errorf("beyond MaxRenders: X-Prism-Cache = %q, want BYPASS", got)
	}
	if !strings.Contains(w.Body.String(), "origin page GET /b") {
		t.Errorf("beyond MaxRenders: body %q, want the origin's page", w.Body.String())
	}
	if n := h.render.calls.Load(); n != 1 {
		t.Errorf("renders started = %d, want 1", n)
	}
	close(release)
	if got := (<-first).Header().Get("X-Prism-Cache"); got != "MISS" {
		t.Errorf("first request X-Prism-Cache = %q, want MISS", got)
	}
	// With the flight over there is room again.
	if got := h.do(http.MethodGet, "/b", uaGooglebot).Header().Get("X-Prism-Cache"); got != "MISS" {
		t.Errorf("after the bound cleared: X-Prism-Cache = %q, want MISS", got)
	}
}

func TestMaxRendersLetsSameKeyJoin(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.MaxRenders = 1 })
	release := make(chan struct{})
	fn, started := blockRender(release)
	h.render.set(fn)
	results := make(chan string, 2)
	for range 2 {
		go func() { results <- h.do(http.MethodGet, "/same", uaGooglebot).Header().Get("X-Prism-Cache") }()
	}
	<-started
	waitFor(t, "both requests to wait on one render", func() bool {
		return h.fill.Waiters(cachestore.Key{HostID: 1, DimensionID: 2, URL: "/same"}) == 2
	})
	close(release)
	for range 2 {
		if got := <-results; got != "MISS" {
			t.Errorf("joined request X-Prism-Cache = %q, want MISS", got)
		}
	}
}

func TestRenderWaitFallsBack(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.RenderWait = 50 * time.Millisecond })
	release := make(chan struct{})
	defer close(release)
	fn, _ := blockRender(release)
	h.render.set(fn)
	w := h.do(http.MethodGet, "/slowrender", uaGooglebot)
	if got := w.Header().Get("X-Prism-Cache"); got != "BYPASS" {
		t.Errorf("render slower than RenderWait: X-Prism-Cache = %q, want BYPASS", got)
	}
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "origin page") {
		t.Errorf("fallback: %d %q", w.Code, w.Body.String())
	}
}

func TestNegativeStaleTTLNeverServesStale(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.FillOpts.StaleTTL = -1 })
	if got := h.do(http.MethodGet, "/s", uaGooglebot).Header().Get("X-Prism-Cache"); got != "MISS" {
		t.Fatalf("first request: %q, want MISS", got)
	}
	h.clock.advance(time.Hour + time.Minute) // past the 1h TTL
	if got := h.do(http.MethodGet, "/s", uaGooglebot).Header().Get("X-Prism-Cache"); got != "MISS" {
		t.Errorf("past TTL with stale serving off: %q, want MISS (rendered anew)", got)
	}
	if n := h.render.calls.Load(); n != 2 {
		t.Errorf("renders = %d, want 2", n)
	}
}

// TestPurgeDuringRenderNotStored purges a key while its render runs: the
// render's page must not come back into the cache.
func TestPurgeDuringRenderNotStored(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	fn, started := blockRender(release)
	h.render.set(fn)
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/purged"}
	done := make(chan fill.Outcome, 1)
	go func() {
		out, _ := h.fill.Refresh(context.Background(), k, prerender.Recache)
		done <- out
	}()
	<-started
	h.store.Delete(k) // the operator purges while the old page renders
	close(release)
	if out := <-done; out.Stored {
		t.Error("render started before the purge was stored")
	}
	if _, ok := h.store.Get(k); ok {
		t.Error("purged key back in the cache")
	}
	h.render.set(htmlResult(200, "<html><body>new</body></html>"))
	if got := h.do(http.MethodGet, "/purged", uaGooglebot).Header().Get("X-Prism-Cache"); got != "MISS" {
		t.Errorf("next crawler request: %q, want MISS", got)
	}
}

// TestRefreshDoesNotJoinOlderRender: a recache asked for while a crawler's
// render is running must render again (the content may have changed since
// that render started), not take the older result.
func TestRefreshDoesNotJoinOlderRender(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	fn, started := blockRender(release)
	h.render.set(fn)
	crawler := make(chan string, 1)
	go func() { crawler <- h.do(http.MethodGet, "/fresh", uaGooglebot).Header().Get("X-Prism-Cache") }()
	<-started
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/fresh"}
	refreshed := make(chan fill.Outcome, 1)
	go func() {
		out, err := h.fill.Refresh(context.Background(), k, prerender.Recache)
		if err != nil {
			t.Errorf("Refresh: %v", err)
		}
		refreshed <- out
	}()
	close(release)
	if got := <-crawler; got != "MISS" {
		t.Errorf("crawler: %q, want MISS", got)
	}
	out := <-refreshed
	if !out.Stored {
		t.Error("Refresh did not store its own render")
	}
	if n := h.render.calls.Load(); n != 2 {
		t.Errorf("renders = %d, want 2 (the crawler's and the refresh's own)", n)
	}
}

func TestOnServeForCacheAnswersOnly(t *testing.T) {
	var mu sync.Mutex
	var served []string
	h := newHarness(t, func(o *testOptions) {
		o.Served = func(k cachestore.Key) { mu.Lock(); served = append(served, k.URL); mu.Unlock() }
	})
	h.do(http.MethodGet, "/o", uaGooglebot) // MISS
	h.do(http.MethodGet, "/o", uaGooglebot) // HIT
	h.clock.advance(time.Hour + time.Minute)
	h.do(http.MethodGet, "/o", uaGooglebot) // STALE
	h.do(http.MethodGet, "/o", uaPerson)    // a person: not from the cache
	mu.Lock()
	defer mu.Unlock()
	if len(served) != 2 {
		t.Errorf("OnServe calls %v, want 2 (the HIT and the STALE)", served)
	}
}

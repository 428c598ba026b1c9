package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/promcheck"
	"github.com/prismproxy/prism/prerender"
)

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return string(out)
}

func TestNewRequiresOptions(t *testing.T) {
	_, err := New(Options{})
	if err == nil {
		t.Fatal("New(Options{}) succeeded")
	}
	for _, want := range []string{"Sites", "Store", "Fill"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestRouting(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name       string
		method     string
		target     string
		ua         string
		opts       []reqOpt
		wantStatus int
		wantOrigin bool   // the origin saw the request
		wantCache  string // X-Prism-Cache; "" none
	}{
		{"person", "GET", "/page", uaPerson, nil, 200, true, ""},
		{"person without UA", "GET", "/page", "", nil, 200, true, ""},
		{"bot", "GET", "/page", uaGooglebot, nil, 200, false, "MISS"},
		{"bot static asset", "GET", "/app.js", uaGooglebot, nil, 200, true, ""},
		{"bot robots.txt", "GET", "/robots.txt", uaGooglebot, nil, 200, true, ""},
		{"bot POST", "POST", "/form", uaGooglebot, nil, 200, true, ""},
		{"bot render loop header", "GET", "/page2", uaGooglebot, []reqOpt{withHeader("X-Prism-Render", "1")}, 200, true, ""},
		{"alias with port", "GET", "http://WWW.example.com:4000/page3", uaPerson, nil, 200, true, ""},
		{"unknown host", "GET", "http://evil.test/", uaGooglebot, nil, 421, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.olog.count()
			w := h.do(tt.method, tt.target, tt.ua, tt.opts...)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.wantStatus, w.Body)
			}
			if got := h.olog.count() > before; got != tt.wantOrigin {
				t.Errorf("origin saw request: %v, want %v", got, tt.wantOrigin)
			}
			if got := w.Header().Get("X-Prism-Cache"); got != tt.wantCache {
				t.Errorf("X-Prism-Cache %q, want %q", got, tt.wantCache)
			}
			if tt.wantOrigin {
				r, body := h.olog.last(t)
				if r.Method != tt.method {
					t.Errorf("origin method %s, want %s", r.Method, tt.method)
				}
				if tt.method == "POST" && body != "form=1" {
					t.Errorf("origin body %q, want form=1", body)
				}
				if !strings.HasPrefix(w.Body.String(), "origin page") || w.Header().Get("X-Origin") != "yes" {
					t.Errorf("client got %q, headers %v: not the origin's response", w.Body, w.Header())
				}
			}
		})
	}
	w := h.do("GET", "http://evil.test/", uaGooglebot)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" || strings.TrimSpace(w.Body.String()) != `{"error":"unknown host"}` {
		t.Errorf("unknown host answer: %q %q", ct, w.Body)
	}
}

func TestPassThroughHeaders(t *testing.T) {
	h := newHarness(t)
	h.do("GET", "http://www.example.com:4000/p?q=1", uaPerson, withHeader("X-Forwarded-For", "6.6.6.6"),
		withHeader("X-Forwarded-Host", "spoof.test"))
	r, _ := h.olog.last(t)
	if r.Host != "www.example.com:4000" {
		t.Errorf("origin Host %q, want the public host", r.Host)
	}
	if r.URL.RequestURI() != "/p?q=1" {
		t.Errorf("origin URI %q", r.URL.RequestURI())
	}
	if got := r.Header.Get("X-Forwarded-For"); got != "192.0.2.1" {
		t.Errorf("X-Forwarded-For %q: an untrusted client's value must be replaced", got)
	}
	if got := r.Header.Get("X-Forwarded-Host"); got != "www.example.com:4000" {
		t.Errorf("X-Forwarded-Host %q", got)
	}
}

func TestForwardedHost(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name, remote string
		wantStatus   int
		wantXFF      string
	}{
		{"trusted proxy", "10.1.2.3:5555", 200, "1.2.3.4, 10.1.2.3"},
		{"untrusted peer", "203.0.113.9:5555", 421, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := h.do("GET", "http://lb.internal/page", uaPerson, func(r *http.Request) {
				r.RemoteAddr = tt.remote
				r.Header.Set("X-Forwarded-Host", "example.com")
				r.Header.Set("X-Forwarded-For", "1.2.3.4")
				r.Header.Set("X-Forwarded-Proto", "https")
			})
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			r, _ := h.olog.last(t)
			if r.Host != "example.com" || r.Header.Get("X-Forwarded-Host") != "example.com" ||
				r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("X-Forwarded-For") != tt.wantXFF {
				t.Errorf("origin saw Host %q, XFH %q, XFP %q, XFF %q", r.Host, r.Header.Get("X-Forwarded-Host"),
					r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-For"))
			}
		})
	}
}

func TestMissThenHit(t *testing.T) {
	h := newHarness(t)
	w1 := h.do("GET", "/page?b=2&a=1&utm_source=x", uaGooglebot, withHeader("Accept-Encoding", "gzip"))
	w2 := h.do("GET", "/page?a=1&b=2", uaGooglebot, withHeader("Accept-Encoding", "gzip"))
	if c1, c2 := w1.Header().Get("X-Prism-Cache"), w2.Header().Get("X-Prism-Cache"); c1 != "MISS" || c2 != "HIT" {
		t.Fatalf("X-Prism-Cache %q then %q, want MISS then HIT", c1, c2)
	}
	if !bytes.Equal(w1.Body.Bytes(), w2.Body.Bytes()) {
		t.Error("MISS and HIT bodies differ")
	}
	if got := gunzip(t, w2.Body.Bytes()); !strings.Contains(got, "rendered") {
		t.Errorf("body %q", got)
	}
	if n := h.render.calls.Load(); n != 1 {
		t.Errorf("Render called %d times, want 1", n)
	}
	if h.olog.count() != 0 {
		t.Error("origin was asked for a rendered page")
	}
	for _, w := range []*httptest.ResponseRecorder{w1, w2} {
		hd := w.Header()
		if hd.Get("X-Prism-Dimension") != "desktop" || hd.Get("Etag") == "" || hd.Get("Last-Modified") == "" ||
			hd.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(hd.Get("Vary"), "User-Agent") {
			t.Errorf("headers %v", hd)
		}
	}
	h.render.mu.Lock()
	req := h.render.last
	h.render.mu.Unlock()
	if req.URL != "https://example.com/page?a=1&b=2" || req.Width != 1366 || req.Mobile || req.Class != prerender.Online {
		t.Errorf("render request %+v", req)
	}
	// The mobile dimension is cached apart.
	w3 := h.do("GET", "/page?a=1&b=2", uaMobileBot)
	if w3.Header().Get("X-Prism-Cache") != "MISS" || w3.Header().Get("X-Prism-Dimension") != "mobile" {
		t.Errorf("mobile: %v", w3.Header())
	}
	h.render.mu.Lock()
	req = h.render.last
	h.render.mu.Unlock()
	if !req.Mobile || req.Width != 412 || req.UserAgent != "MobileChrome" {
		t.Errorf("mobile render request %+v", req)
	}
	if len(h.stored) != 2 {
		t.Errorf("OnStore called %d times, want 2", len(h.stored))
	}
	if got := h.metrics.GetOrCreateCounter(`prism_requests_total{status="hit"}`).Get(); got != 1 {
		t.Errorf(`prism_requests_total{status="hit"} = %d, want 1`, got)
	}
	if got := h.metrics.GetOrCreateCounter(`prism_requests_total{status="miss"}`).Get(); got != 2 {
		t.Errorf(`prism_requests_total{status="miss"} = %d, want 2`, got)
	}
	var b strings.Builder
	h.metrics.WritePrometheus(&b)
	fams, problems := promcheck.Check(b.String())
	if len(problems) > 0 {
		t.Errorf("metrics not as Prometheus wants them: %v", problems)
	}
	if f := fams["prism_proxy_hit_seconds"]; f == nil || f.Metric[0].GetHistogram().GetSampleCount() != 1 {
		t.Errorf("prism_proxy_hit_seconds %v, want the one HIT", f)
	}
	if f := fams["prism_proxy_render_seconds"]; f == nil || f.Metric[0].GetHistogram().GetSampleCount() != 2 {
		t.Errorf("prism_proxy_render_seconds %v, want the two renders", f)
	}
}

func TestEncodings(t *testing.T) {
	h := newHarness(t)
	page := "<!DOCTYPE html><html><body>" + strings.Repeat("héllo wörld ", 5000) + "</body></html>"
	h.render.set(htmlResult(200, page))
	h.do("GET", "/big", uaGooglebot)
	tests := []struct {
		name, accept string
		wantGzip     bool
	}{
		{"none", "", false},
		{"gzip", "gzip", true},
		{"list", "br, gzip, deflate", true},
		{"q zero", "gzip;q=0, identity", false},
		{"q zero spaced", "gzip ; q=0.0", false},
		{"q positive", "gzip;q=0.5", true},
		{"x-gzip", "x-gzip", true},
		{"star", "*", true},
		{"star but gzip refused", "*, gzip;q=0", false},
		{"star zero", "*;q=0", false},
		{"identity only", "identity", false},
		{"bad q", "gzip;q=x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []reqOpt
			if tt.accept != "" {
				opts = append(opts, withHeader("Accept-Encoding", tt.accept))
			}
			w := h.do("GET", "/big", uaGooglebot, opts...)
			if w.Header().Get("X-Prism-Cache") != "HIT" {
				t.Fatalf("not a HIT: %v", w.Header())
			}
			gz := w.Header().Get("Content-Encoding") == "gzip"
			if gz != tt.wantGzip {
				t.Fatalf("gzip %v, want %v", gz, tt.wantGzip)
			}
			body := w.Body.String()
			if gz {
				body = gunzip(t, w.Body.Bytes())
			}
			if body != page {
				t.Errorf("body differs from the render (%d bytes, want %d)", len(body), len(page))
			}
			if cl := w.Header().Get("Content-Length"); cl != itoa(w.Body.Len()) {
				t.Errorf("Content-Length %s, body %d bytes", cl, w.Body.Len())
			}
		})
	}
	w := h.do("HEAD", "/big", uaGooglebot)
	if w.Body.Len() != 0 || w.Header().Get("Content-Length") != itoa(len(page)) {
		t.Errorf("HEAD: body %d bytes, Content-Length %q", w.Body.Len(), w.Header().Get("Content-Length"))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestConditional(t *testing.T) {
	h := newHarness(t)
	w := h.do("GET", "/c", uaGooglebot)
	etag, lm := w.Header().Get("Etag"), w.Header().Get("Last-Modified")
	tests := []struct {
		name string
		opts []reqOpt
		want int
	}{
		{"If-None-Match", []reqOpt{withHeader("If-None-Match", etag)}, 304},
		{"If-None-Match weak", []reqOpt{withHeader("If-None-Match", `"x", W/`+etag)}, 304},
		{"If-None-Match star", []reqOpt{withHeader("If-None-Match", "*")}, 304},
		{"If-None-Match other", []reqOpt{withHeader("If-None-Match", `"other"`)}, 200},
		{"If-Modified-Since same", []reqOpt{withHeader("If-Modified-Since", lm)}, 304},
		{"If-Modified-Since earlier", []reqOpt{withHeader("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")}, 200},
		{"If-None-Match wins over If-Modified-Since", []reqOpt{withHeader("If-None-Match", `"other"`), withHeader("If-Modified-Since", lm)}, 200},
		{"bad date", []reqOpt{withHeader("If-Modified-Since", "yesterday")}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := h.do("GET", "/c", uaGooglebot, tt.opts...)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			if tt.want == 304 && (w.Body.Len() != 0 || w.Header().Get("Etag") != etag) {
				t.Errorf("304 with body %q, ETag %q", w.Body, w.Header().Get("Etag"))
			}
		})
	}
}

func TestStaleServedAndEnqueued(t *testing.T) {
	h := newHarness(t)
	h.do("GET", "/s", uaGooglebot)
	h.clock.advance(90 * time.Minute) // past TTL (1h), within StaleTTL (2h more)
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return nil, prerender.ErrUnavailable
	})
	w := h.do("GET", "/s", uaGooglebot)
	if got := w.Header().Get("X-Prism-Cache"); got != "STALE" || w.Code != 200 {
		t.Fatalf("X-Prism-Cache %q status %d, want STALE 200", got, w.Code)
	}
	want := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/s"}
	if keys := h.enqueuedKeys(); len(keys) != 1 || keys[0] != want {
		t.Errorf("enqueued %v, want [%v]", keys, want)
	}
	if n := h.render.calls.Load(); n != 1 {
		t.Errorf("Render called %d times; a stale hit must not render online", n)
	}
	// Past the stale window with the browser down: the origin answers.
	h.clock.advance(2 * time.Hour)
	w = h.do("GET", "/s", uaGooglebot)
	if got := w.Header().Get("X-Prism-Cache"); got != "BYPASS" || !strings.HasPrefix(w.Body.String(), "origin page") {
		t.Errorf("X-Prism-Cache %q body %q, want BYPASS from the origin", got, w.Body)
	}
}

func TestStaleWithoutEnqueue(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.Offer = nil })
	h.do("GET", "/s", uaGooglebot)
	h.clock.advance(90 * time.Minute)
	if got := h.do("GET", "/s", uaGooglebot).Header().Get("X-Prism-Cache"); got != "STALE" {
		t.Errorf("X-Prism-Cache %q, want STALE", got)
	}
}

func TestRenderFailureFallsBack(t *testing.T) {
	tests := []struct {
		name   string
		render func(context.Context, prerender.Request) (*prerender.Result, error)
	}{
		{"browser down", func(context.Context, prerender.Request) (*prerender.Result, error) {
			return nil, prerender.ErrUnavailable
		}},
		{"timeout", func(context.Context, prerender.Request) (*prerender.Result, error) {
			return nil, context.DeadlineExceeded
		}},
		{"blank", func(context.Context, prerender.Request) (*prerender.Result, error) { return nil, prerender.ErrBlank }},
		{"empty 200", htmlResult(200, "  ")},
		{"5xx", htmlResult(503, "<html>maintenance</html>")},
		{"nil result", func(context.Context, prerender.Request) (*prerender.Result, error) { return nil, nil }},
		{"panic", func(context.Context, prerender.Request) (*prerender.Result, error) { panic("boom") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.render.set(tt.render)
			w := h.do("GET", "/missing", uaGooglebot)
			if got := w.Header().Get("X-Prism-Cache"); got != "BYPASS" {
				t.Fatalf("X-Prism-Cache %q, want BYPASS", got)
			}
			if w.Code != 404 || !strings.Contains(w.Body.String(), "origin not found") {
				t.Errorf("got %d %q, want the origin's 404", w.Code, w.Body)
			}
			if w.Header().Get("X-Prism-Dimension") != "desktop" {
				t.Errorf("X-Prism-Dimension %q", w.Header().Get("X-Prism-Dimension"))
			}
			if _, ok := h.store.Get(cachestore.Key{HostID: 1, DimensionID: 2, URL: "/missing"}); ok {
				t.Error("a failed render was stored")
			}
		})
	}
}

func TestRenderFailureKeepsGoodEntry(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.Offer = nil })
	h.do("GET", "/k", uaGooglebot)
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/k"}
	good, _ := h.store.Get(k)
	for _, fn := range []func(context.Context, prerender.Request) (*prerender.Result, error){
		htmlResult(500, "<html>error</html>"),
		func(context.Context, prerender.Request) (*prerender.Result, error) { return nil, prerender.ErrBlank },
	} {
		h.render.set(fn)
		out, err := h.fill.Refresh(context.Background(), k, prerender.Recache)
		if err == nil || out.Stored {
			t.Errorf("Refresh = %+v, %v; want an error, nothing stored", out, err)
		}
	}
	var out fill.Outcome
	h.render.set(htmlResult(500, "<html>error</html>"))
	out, err := h.fill.Refresh(context.Background(), k, prerender.Recache)
	if !errors.Is(err, fill.ErrServerStatus) || !strings.HasSuffix(err.Error(), ": 500") || out.Entry != nil || out.Stored {
		t.Errorf("5xx Refresh = %+v, %v; want fill.ErrServerStatus naming the status, and no outcome", out, err)
	}
	now, _ := h.store.Get(k)
	if now.ETag != good.ETag {
		t.Error("a failed render replaced the good entry")
	}
	// Stale and the browser down: the stale copy is served.
	h.clock.advance(90 * time.Minute)
	w := h.do("GET", "/k", uaGooglebot)
	if w.Header().Get("X-Prism-Cache") != "STALE" || !strings.Contains(w.Body.String(), "rendered") {
		t.Errorf("got %v %q, want the stale copy", w.Header(), w.Body)
	}
}

func TestStatusPolicy(t *testing.T) {
	h := newHarness(t)
	h.render.set(htmlResult(404, "<html>not here</html>"))
	w := h.do("GET", "/gone", uaGooglebot)
	if w.Code != 404 || w.Header().Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("got %d %q", w.Code, w.Header().Get("X-Prism-Cache"))
	}
	if w = h.do("GET", "/gone", uaGooglebot); w.Code != 404 || w.Header().Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("second: %d %q, want a cached 404", w.Code, w.Header().Get("X-Prism-Cache"))
	}
	h.clock.advance(11 * time.Minute) // past NotFoundTTL
	if got := h.do("GET", "/gone", uaGooglebot).Header().Get("X-Prism-Cache"); got != "STALE" {
		t.Errorf("404 after NotFoundTTL: %q, want STALE", got)
	}

	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return &prerender.Result{Status: 301, Header: http.Header{"Location": {"https://example.com/new"}, "Set-Cookie": {"a=b"}}}, nil
	})
	for i, want := range []string{"MISS", "HIT"} {
		w := h.do("GET", "/old", uaGooglebot, withHeader("Accept-Encoding", "gzip"))
		if w.Code != 301 || w.Header().Get("Location") != "https://example.com/new" || w.Header().Get("X-Prism-Cache") != want {
			t.Errorf("redirect %d: %d %v", i, w.Code, w.Header())
		}
		if w.Header().Get("Set-Cookie") != "" {
			t.Error("Set-Cookie replayed from the cache")
		}
	}

	calls := h.render.calls.Load()
	h.render.set(htmlResult(403, "<html>forbidden</html>"))
	for range 2 {
		if w := h.do("GET", "/private", uaGooglebot); w.Code != 403 || w.Header().Get("X-Prism-Cache") != "MISS" {
			t.Errorf("403: %d %q", w.Code, w.Header().Get("X-Prism-Cache"))
		}
	}
	if n := h.render.calls.Load() - calls; n != 2 {
		t.Errorf("403 rendered %d times, want 2 (never cached)", n)
	}
}

func TestConcurrentMissesShareOneRender(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.render.set(func(ctx context.Context, _ prerender.Request) (*prerender.Result, error) {
		<-release
		return htmlResult(200, "<html>shared</html>")(ctx, prerender.Request{})
	})
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/shared"}
	const n = 8
	var wg sync.WaitGroup
	results := make([]*httptest.ResponseRecorder, n)
	for i := range n {
		wg.Go(func() { results[i] = h.do("GET", "/shared", uaGooglebot) })
	}
	waitFor(t, "8 waiters", func() bool { return h.fill.Waiters(k) == n })
	close(release)
	wg.Wait()
	if c := h.render.calls.Load(); c != 1 {
		t.Errorf("Render called %d times, want 1", c)
	}
	for i, w := range results {
		if w.Code != 200 || w.Body.String() != "<html>shared</html>" || w.Header().Get("X-Prism-Cache") != "MISS" {
			t.Errorf("request %d: %d %q %q", i, w.Code, w.Header().Get("X-Prism-Cache"), w.Body)
		}
	}
}

func TestWaiterCancelDoesNotCancelOthers(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	renderCtx := make(chan context.Context, 1)
	h.render.set(func(ctx context.Context, _ prerender.Request) (*prerender.Result, error) {
		renderCtx <- ctx
		select {
		case <-release:
			return htmlResult(200, "<html>ok</html>")(ctx, prerender.Request{})
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/w"}
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan *httptest.ResponseRecorder)
	go func() {
		done1 <- h.do("GET", "/w", uaGooglebot, func(r *http.Request) { *r = *r.WithContext(ctx1) })
	}()
	done2 := make(chan *httptest.ResponseRecorder)
	go func() { done2 <- h.do("GET", "/w", uaGooglebot) }()
	waitFor(t, "2 waiters", func() bool { return h.fill.Waiters(k) == 2 })
	rctx := <-renderCtx
	cancel1()
	w1 := <-done1
	if w1.Body.Len() != 0 || w1.Header().Get("X-Prism-Cache") != "" {
		t.Errorf("the departed client was answered: %d %q", w1.Code, w1.Body)
	}
	if rctx.Err() != nil {
		t.Fatal("one waiter leaving cancelled the shared render")
	}
	close(release)
	if w2 := <-done2; w2.Code != 200 || w2.Body.String() != "<html>ok</html>" {
		t.Errorf("remaining waiter got %d %q", w2.Code, w2.Body)
	}

	// Every waiter leaving cancels the render.
	release2 := make(chan struct{})
	defer close(release2)
	h.render.set(func(ctx context.Context, _ prerender.Request) (*prerender.Result, error) {
		renderCtx <- ctx
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx3, cancel3 := context.WithCancel(context.Background())
	done3 := make(chan struct{})
	go func() {
		defer close(done3)
		h.fill.Refresh(ctx3, cachestore.Key{HostID: 1, DimensionID: 2, URL: "/w2"}, prerender.Online)
	}()
	rctx = <-renderCtx
	cancel3()
	<-done3
	select {
	case <-rctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("render not cancelled after its last waiter left")
	}
}

func TestPartialNeverReplacesComplete(t *testing.T) {
	h := newHarness(t)
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/p"}
	partial := func(context.Context, prerender.Request) (*prerender.Result, error) {
		return &prerender.Result{Status: 200, HTML: []byte("<html>partial</html>"), Partial: true}, nil
	}
	// No entry: a partial capture is stored, and marked when served.
	h.render.set(partial)
	out, err := h.fill.Refresh(context.Background(), k, prerender.Recache)
	if err != nil || !out.Stored || out.Previous != fill.CacheMiss {
		t.Fatalf("Refresh = %+v, %v", out, err)
	}
	if w := h.do("GET", "/p", uaGooglebot); w.Header().Get("X-Prism-Partial") != "1" {
		t.Errorf("partial entry served without X-Prism-Partial: %v", w.Header())
	}
	// A complete render replaces the partial one.
	h.render.set(htmlResult(200, "<html>complete</html>"))
	out, err = h.fill.Refresh(context.Background(), k, prerender.Recache)
	if err != nil || !out.Stored || out.Previous != fill.CacheHit {
		t.Fatalf("Refresh = %+v, %v", out, err)
	}
	// A partial render never replaces the complete one.
	h.render.set(partial)
	out, err = h.fill.Refresh(context.Background(), k, prerender.Recache)
	if err != nil || out.Stored {
		t.Fatalf("Refresh = %+v, %v; want not stored", out, err)
	}
	w := h.do("GET", "/p", uaGooglebot)
	if w.Body.String() != "<html>complete</html>" || w.Header().Get("X-Prism-Partial") != "" {
		t.Errorf("served %q %v", w.Body, w.Header())
	}
}

func TestRefresh(t *testing.T) {
	h := newHarness(t)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/r?x=1"}
	out, err := h.fill.Refresh(context.Background(), k, prerender.Online)
	if err != nil || !out.Stored || out.Previous != fill.CacheMiss || out.Entry == nil || out.Entry.Key != k {
		t.Fatalf("Refresh = %+v, %v", out, err)
	}
	if got := gunzip(t, out.Entry.Body); !strings.Contains(got, "rendered") {
		t.Errorf("stored body %q", got)
	}
	h.clock.advance(90 * time.Minute)
	if out, _ = h.fill.Refresh(context.Background(), k, prerender.Recache); out.Previous != fill.CacheStale {
		t.Errorf("Previous %v, want STALE", out.Previous)
	}
	if out, _ = h.fill.Refresh(context.Background(), k, prerender.Recache); out.Previous != fill.CacheHit {
		t.Errorf("Previous %v, want HIT (Refresh always renders)", out.Previous)
	}
	if n := h.render.calls.Load(); n != 3 {
		t.Errorf("Render called %d times, want 3", n)
	}
	for _, bad := range []cachestore.Key{{HostID: 9, DimensionID: 1, URL: "/"}, {HostID: 1, DimensionID: 9, URL: "/"}} {
		if _, err := h.fill.Refresh(context.Background(), bad, prerender.Online); !errors.Is(err, fill.ErrUnknownKey) {
			t.Errorf("Refresh(%v) error %v, want fill.ErrUnknownKey", bad, err)
		}
	}
}

func TestHostileInput(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name, target string
		want         int
	}{
		{"dot-dot escaping root", "/a/%2e%2e/%2e%2e/etc/passwd", 400},
		{"NUL", "/a%00b", 400},
		{"invalid UTF-8 path is fine", "/%ff%fe", 200},
		{"huge query", "/q?" + strings.Repeat("a=1&", 2000), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := h.do("GET", tt.target, uaGooglebot)
			if w.Code != tt.want {
				t.Errorf("status %d, want %d: %q", w.Code, tt.want, w.Body)
			}
			if tt.want == 400 && strings.TrimSpace(w.Body.String()) != `{"error":"invalid url"}` {
				t.Errorf("body %q", w.Body)
			}
		})
	}
	w := h.do("GET", "/x", strings.Repeat("Googlebot ", 10000))
	if w.Code != 200 {
		t.Errorf("long UA: %d", w.Code)
	}
}

func TestPanicRecovered(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.Offer = func(cachestore.Key) bool { panic("enqueue exploded") } })
	h.do("GET", "/x", uaGooglebot)
	h.clock.advance(90 * time.Minute)
	w := h.do("GET", "/x", uaGooglebot)
	if w.Code != 500 {
		t.Errorf("status %d, want 500", w.Code)
	}
	if got := h.metrics.GetOrCreateCounter("prism_proxy_panics_total").Get(); got != 1 {
		t.Errorf("panics counter %d", got)
	}
}

func TestOriginDown(t *testing.T) {
	h := newHarness(t)
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return nil, prerender.ErrUnavailable
	})
	h.origin.Close()
	for _, ua := range []string{uaPerson, uaGooglebot} {
		w := h.do("GET", "/page", ua)
		if w.Code != http.StatusBadGateway || strings.TrimSpace(w.Body.String()) != "Bad Gateway" {
			t.Errorf("%s: %d %q, want a plain 502", ua, w.Code, w.Body)
		}
	}
}

func TestOriginTimeout(t *testing.T) {
	h := newHarness(t, func(o *testOptions) {
		o.Transport = &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}
	})
	if w := h.do("GET", "/slow", uaPerson); w.Code != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", w.Code)
	}
	// A client that is gone gets nothing written.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := h.do("GET", "/slow", uaPerson, func(r *http.Request) { *r = *r.WithContext(ctx) })
	if w.Body.Len() != 0 {
		t.Errorf("wrote %q to a departed client", w.Body)
	}
}

func TestOverRealServer(t *testing.T) {
	// End to end over a real listener: HTTP semantics the recorder cannot
	// show (Content-Length, gzip transparency in the client, HEAD).
	h := newHarness(t)
	srv := httptest.NewServer(h.p)
	defer srv.Close()
	get := func(method, ua string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+"/real", nil)
		req.Host = "example.com"
		req.Header.Set("User-Agent", ua)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i, want := range []string{"MISS", "HIT"} {
		resp := get("GET", uaGooglebot)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Prism-Cache") != want || !strings.Contains(string(b), "rendered") || !resp.Uncompressed {
			t.Errorf("request %d: %q %q uncompressed=%v", i, resp.Header.Get("X-Prism-Cache"), b, resp.Uncompressed)
		}
	}
	resp := get("HEAD", uaGooglebot)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Prism-Cache") != "HIT" {
		t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}
	resp = get("GET", uaPerson)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "origin page GET /real" {
		t.Errorf("person got %q", b)
	}
}

// A page renders at the scheme the crawler used when a trusted proxy says
// so, else at the host's own.
func TestRenderScheme(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		remote, proto, want string
	}{
		{"10.1.2.3:5000", "http", "http://example.com/s1"},
		{"10.1.2.3:5000", "HTTPS, http", "https://example.com/s2"},
		{"10.1.2.3:5000", "gopher", "https://example.com/s3"},
		{"192.0.2.1:5000", "http", "https://example.com/s4"}, // untrusted peer
	}
	for i, c := range cases {
		path := "/s" + strconv.Itoa(i+1)
		h.do("GET", path, uaGooglebot, withHeader("X-Forwarded-Proto", c.proto), func(r *http.Request) { r.RemoteAddr = c.remote })
		h.render.mu.Lock()
		got := h.render.last.URL
		h.render.mu.Unlock()
		if got != c.want {
			t.Errorf("%s from %s: rendered %s, want %s", c.proto, c.remote, got, c.want)
		}
	}
}

// The defaults sized by the renderer: 16 pending renders per tab, and a
// crawler waits a render's timeout plus 5s.
func TestDefaultsFromRenderer(t *testing.T) {
	h := newHarness(t, func(o *testOptions) { o.Tabs = 3; o.RenderTimeout = 10 * time.Second })
	if h.p.opts.MaxRenders != 48 || h.p.opts.RenderWait != 15*time.Second {
		t.Errorf("MaxRenders %d, RenderWait %v; want 48, 15s", h.p.opts.MaxRenders, h.p.opts.RenderWait)
	}
	h = newHarness(t)
	if h.p.opts.MaxRenders != 64 || h.p.opts.RenderWait != 20*time.Second {
		t.Errorf("zero options: MaxRenders %d, RenderWait %v; want 64, 20s", h.p.opts.MaxRenders, h.p.opts.RenderWait)
	}
}

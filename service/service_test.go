package service

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

const (
	googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	mobileBot = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Chrome/130.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1)"
	person    = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
)

// fakeRenderer is the browser seam (Chromium is exercised by the e2e
// tests): pages by path suffix, renders counted.
type fakeRenderer struct {
	calls atomic.Int64
	mu    sync.Mutex
	reqs  []prerender.Request
	gate  chan struct{} // /slow waits for it
	fail  atomic.Bool   // every render fails
}

func (f *fakeRenderer) render(ctx context.Context, req prerender.Request) (*prerender.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	html := func(s string) []byte { return []byte("<!DOCTYPE html><html><body>" + s + "</body></html>") }
	u, _ := url.Parse(req.URL)
	if f.fail.Load() {
		return nil, fmt.Errorf("render %s: %w", req.URL, prerender.ErrPageCrashed)
	}
	switch u.Path {
	case "/slow":
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "/missing":
		return &prerender.Result{Status: 404, Header: http.Header{}, HTML: html("not here")}, nil
	case "/moved":
		return &prerender.Result{Status: 301, Header: http.Header{"Location": {"https://site.test/new"}}}, nil
	case "/fail":
		return nil, fmt.Errorf("render %s: %w", req.URL, context.DeadlineExceeded)
	case "/down":
		return nil, fmt.Errorf("render %s: %w", req.URL, prerender.ErrUnavailable)
	}
	return &prerender.Result{Status: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
		HTML: html(fmt.Sprintf("rendered %s width=%d", req.URL, req.Width))}, nil
}

type env struct {
	mu      sync.Mutex
	now     time.Time
	offers  []cachestore.Key
	srv     *Server
	store   *cachestore.Store
	r       *fakeRenderer
	origin  *httptest.Server
	purges  []cluster.Purge
	forgot  []cachestore.Key
	held    chan struct{} // the origin's /held answers once it is closed
	release func()        // closes held (once)
}

type fakeCluster struct{ e *env }

func (c fakeCluster) Purge(_ context.Context, p cluster.Purge) cluster.PurgeResult {
	c.e.purges = append(c.e.purges, p)
	return cluster.PurgeResult{Applied: 1, Live: 1}
}

func newEnv(t testing.TB, mods ...func(*Options)) *env {
	t.Helper()
	e := &env{r: &fakeRenderer{gate: make(chan struct{})}, now: time.Now(), held: make(chan struct{})}
	e.release = sync.OnceFunc(func() { close(e.held) })
	e.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Set-Cookie", "s=1")
		switch r.URL.Path {
		case "/liar": // claims what only PRISM may say, and leaks
			w.Header().Set("X-Render-Source", "rendered")
			w.Header().Set("X-Render-Cache", "hit")
			w.Header().Set("X-Prism-Partial", "1")
			w.Header().Set("X-Prism-Cache", "HIT")
			w.Header().Set("Connection", "X-Secret")
			w.Header().Set("X-Secret", "internal")
			w.Header().Set("Location", e.origin.URL+"/elsewhere?a=1") // its own, private address
			w.WriteHeader(http.StatusFound)
			return
		case "/huge":
			w.Write(bytes.Repeat([]byte("x"), 64<<10))
			return
		case "/held": // held until release
			<-e.held
			return
		}
		fmt.Fprintf(w, "<html>origin page %s host=%s</html>", r.URL.Path, r.Host)
	}))
	t.Cleanup(e.origin.Close)
	t.Cleanup(func() { e.release() }) // before the origin closes: it waits for its handlers
	ou, _ := url.Parse(e.origin.URL)
	sites, err := site.New(site.Options{Hosts: []site.Host{{
		ID: 1, Name: "site.test", Aliases: []string{"www.site.test"}, Origin: ou,
		Dimensions: []site.Dimension{
			{ID: 2, Name: "mobile", MatchUA: []string{"re:android.*googlebot"}, Width: 412, Height: 915, Mobile: true},
			{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot", "bingbot"}, Width: 1366, Height: 768},
		},
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
	go func() { defer close(done); _ = store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	e.store = store
	pipe, err := fill.New(fill.Options{Sites: sites, Store: store, Render: e.r.render, Logger: logger,
		TTL: time.Hour, StaleTTL: time.Hour, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Sites: sites, Store: store, Fill: pipe, Logger: logger,
		AllowFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Forget:    func(keys ...cachestore.Key) { e.forgot = append(e.forgot, keys...) },
		Cluster:   fakeCluster{e},
		Now:       e.clock,
		Offer: func(k cachestore.Key) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.offers = append(e.offers, k)
			return true
		},
	}
	for _, m := range mods {
		m(&opts)
	}
	if e.srv, err = New(opts); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

type resp struct {
	status int
	header http.Header
	body   string
}

// do serves a request whose target is uri, exactly as sent on the wire.
func (e *env) do(t *testing.T, method, uri string, body io.Reader, headers ...string) resp {
	t.Helper()
	r := httptest.NewRequest(method, "/", body)
	r.RequestURI = uri
	if u, err := url.ParseRequestURI(uri); err == nil {
		r.URL = u
	}
	r.RemoteAddr = "127.0.0.1:5555"
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		if k == "RemoteAddr" {
			r.RemoteAddr = strings.TrimSpace(v)
			continue
		}
		r.Header.Set(k, strings.TrimSpace(v))
	}
	w := httptest.NewRecorder()
	if aborted := serve(e.srv, w, r); aborted {
		// net/http drops the connection: the client gets no answer.
		return resp{status: -1, header: w.Result().Header, body: w.Body.String()}
	}
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	if res.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s %s: gzip: %v", method, uri, err)
		}
		b, _ = io.ReadAll(zr)
	}
	return resp{res.StatusCode, res.Header, string(b)}
}

// serve runs h and reports whether it aborted the response
// (panic(http.ErrAbortHandler), which net/http turns into a dropped
// connection).
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	h.ServeHTTP(w, r)
	return false
}

func (e *env) get(t *testing.T, uri string, headers ...string) resp {
	t.Helper()
	return e.do(t, http.MethodGet, uri, nil, headers...)
}

func TestPrerenderURLFormsShareOneKey(t *testing.T) {
	e := newEnv(t)
	forms := []string{
		"/https://site.test/products/x?y=1&utm_source=z",
		"/https:/site.test/products/x?y=1",                // "//" collapsed by a client
		"/https%3A%2F%2Fsite.test%2Fproducts%2Fx%3Fy%3D1", // encodeURIComponent
		"/http://www.site.test/products/x?y=1",            // an alias, the other scheme
		"/HTTPS://SITE.TEST/products/x?y=1",               // case of scheme and host
		"/render?url=" + url.QueryEscape("https://site.test/products/x?y=1"),
	}
	for i, f := range forms {
		r := e.get(t, f, "User-Agent: "+googlebot)
		want := "HIT"
		if i == 0 {
			want = "MISS"
		}
		if r.status != 200 || r.header.Get("X-Prism-Cache") != want || r.header.Get("X-Prism-Dimension") != "desktop" {
			t.Fatalf("%s: %d cache=%q dim=%q, want 200 %s desktop\n%s", f, r.status, r.header.Get("X-Prism-Cache"),
				r.header.Get("X-Prism-Dimension"), want, r.body)
		}
		if !strings.Contains(r.body, "rendered https://site.test/products/x?y=1 width=1366") {
			t.Fatalf("%s: body %q", f, r.body)
		}
	}
	if n := e.r.calls.Load(); n != 1 {
		t.Fatalf("%d renders for one page in %d forms, want 1", n, len(forms))
	}
	// The User-Agent picks the dimension; one matching none gets the default.
	if r := e.get(t, "/https://site.test/products/x?y=1", "User-Agent: "+mobileBot); r.header.Get("X-Prism-Dimension") != "mobile" || !strings.Contains(r.body, "width=412") {
		t.Fatalf("mobile crawler: dim %q body %q", r.header.Get("X-Prism-Dimension"), r.body)
	}
	for _, ua := range []string{person, ""} {
		if r := e.get(t, "/https://site.test/products/x?y=1", "User-Agent: "+ua); r.status != 200 || r.header.Get("X-Prism-Dimension") != "desktop" {
			t.Fatalf("UA %q: %d dim %q, want the default (desktop)", ua, r.status, r.header.Get("X-Prism-Dimension"))
		}
	}
}

func TestDefaultDimensionOption(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.DefaultDimension = "MOBILE" })
	if r := e.get(t, "/https://site.test/a", "User-Agent: "+person); r.header.Get("X-Prism-Dimension") != "mobile" {
		t.Fatalf("default_dimension mobile: got %q", r.header.Get("X-Prism-Dimension"))
	}
	if _, err := New(Options{Sites: e.srv.opts.Sites, Store: e.store, Fill: e.srv.opts.Fill, DefaultDimension: "tablet"}); err == nil {
		t.Fatal("unknown default dimension accepted")
	}
}

// TestRefusesWhatIsNotAConfiguredURL: every URL that is not an absolute
// http(s) URL of a configured host is a 4xx, renders nothing and stores
// nothing (no SSRF, no junk keys).
func TestRefusesWhatIsNotAConfiguredURL(t *testing.T) {
	e := newEnv(t)
	for _, uri := range []string{
		"/https://evil.test/x",
		"/http://127.0.0.1:1/admin",
		"/http://169.254.169.254/latest/meta-data/",
		"/products/x", // a relative path: the service's own address
		"/site.test/products/x",
		"//site.test/x",
		"/file:///etc/passwd",
		"/javascript:alert(1)",
		"/https://user:pw@site.test/x",
		"/https%3A%2F%2Fevil.test%2Fx",
		"/https%3A%2F%2Fsite.test%2F%ZZ",
		"/render?url=/products/x",
		"/render?url=" + url.QueryEscape("https://evil.test/"),
		"/render?url=" + url.QueryEscape("gopher://site.test/"),
		"/render?url=" + url.QueryEscape("https://site.test/a\\b"),
		"/render?url=" + url.QueryEscape("https://site.test/a\nb"),
		"/render",
		"/render/https%3A%2F%2Fevil.test%2F",
		"/render/products/x",
		"/invalidate/https://evil.test/x",
		"/https://site.test/" + strings.Repeat("a", maxURLLen),
	} {
		r := e.get(t, uri, "User-Agent: "+googlebot)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%.80s: status %d, want 4xx\n%s", uri, r.status, r.body)
		}
		if !strings.Contains(r.header.Get("Content-Type"), "json") || !strings.Contains(r.body, `"error"`) {
			t.Errorf("%.80s: not a JSON error: %q", uri, r.body)
		}
	}
	if n := e.r.calls.Load(); n != 0 {
		t.Fatalf("%d renders for refused URLs", n)
	}
	n := 0
	e.store.Range(func(cachestore.Meta) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d entries stored for refused URLs", n)
	}
	if r := e.get(t, "/"); r.status != http.StatusNotFound {
		t.Fatalf("/: %d, want 404", r.status)
	}
}

func TestTokens(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Tokens = []string{"tok-one", "tok-two"} })
	u := "/https://site.test/t"
	for _, tc := range []struct {
		uri    string
		hdr    []string
		status int
	}{
		{u, nil, 401},
		{u, []string{"X-Prerender-Token: nope"}, 401},
		{u, []string{"X-Prerender-Token: tok-one "}, 200}, // header values are trimmed
		{u, []string{"X-Prerender-Token: tok-two"}, 200},
		{u, []string{"X-Render-Key: tok-two"}, 401}, // prerender's route wants its own header
		{"/render?url=" + url.QueryEscape("https://site.test/t"), []string{"X-Prerender-Token: tok-one"}, 200},
		{"/render?url=" + url.QueryEscape("https://site.test/t"), []string{"X-Render-Key: bad"}, 401},
		{"/render?url=" + url.QueryEscape("https://site.test/t"), []string{"X-Render-Key: tok-one"}, 200},
		{"/render?url=" + url.QueryEscape("https://site.test/t"), []string{"X-Render-Key:"}, 401},
		// Rendertron routes carry no token: allow_from decides.
		{"/render/" + url.PathEscape("https://site.test/t"), nil, 200},
		{"/render/" + url.PathEscape("https://site.test/t"), []string{"RemoteAddr: 10.0.0.5:1234"}, 403},
		{"/invalidate/" + url.PathEscape("https://site.test/t"), []string{"RemoteAddr: [2001:db8::1]:1234"}, 403},
	} {
		r := e.get(t, tc.uri, tc.hdr...)
		if r.status != tc.status {
			t.Errorf("%s %v: %d, want %d (%s)", tc.uri, tc.hdr, r.status, tc.status, r.body)
		}
	}
}

func TestPrerenderStatusRules(t *testing.T) {
	e := newEnv(t)
	r := e.get(t, "/https://site.test/missing", "User-Agent: "+googlebot)
	if r.status != 404 || !strings.Contains(r.body, "not here") {
		t.Fatalf("404 page: %d %q", r.status, r.body)
	}
	r = e.get(t, "/https://site.test/moved", "User-Agent: "+googlebot)
	if r.status != 301 || r.header.Get("Location") != "https://site.test/new" {
		t.Fatalf("redirect: %d Location %q, want 301 returned, not followed", r.status, r.header.Get("Location"))
	}
	for path, reason := range map[string]string{"/fail": "render timed out", "/down": "browser unavailable"} {
		r = e.get(t, "/https://site.test"+path, "User-Agent: "+googlebot)
		if r.status != http.StatusGatewayTimeout || r.header.Get("X-Prerender-504-Reason") != reason {
			t.Fatalf("%s: %d reason %q, want 504 %q", path, r.status, r.header.Get("X-Prerender-504-Reason"), reason)
		}
		if strings.Contains(r.body, "origin page") {
			t.Fatalf("%s: prerender failure answered with the origin's page", path)
		}
	}
	// A second request for the 404 is a HIT (404s are cached).
	if r = e.get(t, "/https://site.test/missing", "User-Agent: "+googlebot); r.status != 404 || r.header.Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("second 404: %d %q", r.status, r.header.Get("X-Prism-Cache"))
	}
}

func TestGzipAndHead(t *testing.T) {
	e := newEnv(t)
	r := e.get(t, "/https://site.test/g", "User-Agent: "+googlebot, "Accept-Encoding: gzip")
	if r.header.Get("Content-Encoding") != "gzip" || !strings.Contains(r.body, "rendered") {
		t.Fatalf("gzip: enc %q body %q", r.header.Get("Content-Encoding"), r.body)
	}
	for _, ae := range []string{"", "identity", "gzip;q=0", "br"} {
		r = e.get(t, "/https://site.test/g", "User-Agent: "+googlebot, "Accept-Encoding: "+ae)
		if r.header.Get("Content-Encoding") != "" || !strings.Contains(r.body, "rendered") {
			t.Fatalf("Accept-Encoding %q: enc %q body %q", ae, r.header.Get("Content-Encoding"), r.body)
		}
	}
	r = e.do(t, http.MethodHead, "/https://site.test/g", nil, "User-Agent: "+googlebot)
	if r.status != 200 || r.body != "" || r.header.Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("HEAD: %d %q %q", r.status, r.body, r.header.Get("X-Prism-Cache"))
	}
}

func TestMethodsAndBodies(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, uri, allow string
		hdr                []string
	}{
		{http.MethodPut, "/https://site.test/a", "GET, HEAD", nil},
		{http.MethodPost, "/https://site.test/a", "GET, HEAD", nil},
		{http.MethodDelete, "/render?url=x", "GET, HEAD, POST", nil},
		{http.MethodPost, "/render?url=x", "GET, HEAD", []string{"X-Render-Key: k"}},
		{http.MethodPost, "/render/https%3A%2F%2Fsite.test%2F", "GET, HEAD", nil},
		{http.MethodPut, "/invalidate/https%3A%2F%2Fsite.test%2F", "GET, POST", nil},
		{http.MethodPost, "/_ah/health", "GET, HEAD", nil},
	} {
		r := e.do(t, tc.method, tc.uri, nil, tc.hdr...)
		if r.status != 405 || r.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 %q", tc.method, tc.uri, r.status, r.header.Get("Allow"), tc.allow)
		}
	}
	// POST /render with a JSON or form body.
	r := e.do(t, http.MethodPost, "/render", strings.NewReader(`{"url":"https://site.test/posted"}`), "Content-Type: application/json", "User-Agent: "+googlebot)
	if r.status != 200 || !strings.Contains(r.body, "rendered https://site.test/posted") {
		t.Fatalf("POST json: %d %q", r.status, r.body)
	}
	r = e.do(t, http.MethodPost, "/render", strings.NewReader("url="+url.QueryEscape("https://site.test/form")), "Content-Type: application/x-www-form-urlencoded")
	if r.status != 200 || !strings.Contains(r.body, "rendered https://site.test/form") {
		t.Fatalf("POST form: %d %q", r.status, r.body)
	}
	big := `{"url":"https://site.test/` + strings.Repeat("a", maxBody) + `"}`
	if r = e.do(t, http.MethodPost, "/render", strings.NewReader(big), "Content-Type: application/json"); r.status != 413 {
		t.Fatalf("oversized body: %d, want 413", r.status)
	}
	for _, b := range []string{"{", "[]", `{"url":5}`, `{}`} {
		if r = e.do(t, http.MethodPost, "/render", strings.NewReader(b), "Content-Type: application/json"); r.status != 400 {
			t.Fatalf("body %q: %d, want 400", b, r.status)
		}
	}
}

func TestRendertron(t *testing.T) {
	e := newEnv(t)
	target := "https://site.test/rt?a=1"
	enc := "/render/" + url.QueryEscape(target) // rendertron-middleware: encodeURIComponent
	r := e.get(t, enc, "User-Agent: "+mobileBot)
	if r.status != 200 || r.header.Get("X-Prism-Dimension") != "desktop" || r.header.Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("rendertron: %d dim %q cache %q (the UA is not forwarded: default dimension)", r.status, r.header.Get("X-Prism-Dimension"), r.header.Get("X-Prism-Cache"))
	}
	if !strings.Contains(r.body, "rendered https://site.test/rt?a=1") {
		t.Fatalf("rendertron body %q", r.body)
	}
	// Raw (unencoded) form; Rendertron's own parameters are not the page's.
	r = e.get(t, "/render/https://site.test/rt?a=1&wc-inject-shadydom=true")
	if r.header.Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("raw form: cache %q, want HIT of the same key", r.header.Get("X-Prism-Cache"))
	}
	r = e.get(t, enc+"?mobile")
	if r.header.Get("X-Prism-Dimension") != "mobile" || !strings.Contains(r.body, "width=412") {
		t.Fatalf("?mobile: dim %q", r.header.Get("X-Prism-Dimension"))
	}
	if r = e.get(t, "/render/https://site.test/rt?a=1&mobile"); r.header.Get("X-Prism-Dimension") != "mobile" || r.header.Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("raw ?mobile: dim %q cache %q", r.header.Get("X-Prism-Dimension"), r.header.Get("X-Prism-Cache"))
	}
	// A failed render answers with the origin's page (BYPASS), not a 5xx.
	r = e.get(t, "/render/"+url.QueryEscape("https://site.test/fail"))
	if r.status != 200 || r.header.Get("X-Prism-Cache") != "BYPASS" || !strings.Contains(r.body, "origin page /fail host=site.test") {
		t.Fatalf("rendertron failure: %d %q %q", r.status, r.header.Get("X-Prism-Cache"), r.body)
	}
	if r.header.Get("Set-Cookie") != "" {
		t.Fatal("origin's Set-Cookie relayed")
	}

	// /invalidate drops every dimension of the URL, here and in the cluster.
	r = e.get(t, "/invalidate/"+url.QueryEscape(target))
	if r.status != 200 || !strings.Contains(r.body, `"invalidated":2`) {
		t.Fatalf("invalidate: %d %q", r.status, r.body)
	}
	if len(e.purges) != 1 || len(e.purges[0].Keys) != 2 || len(e.forgot) != 2 {
		t.Fatalf("cluster purges %+v, forgotten %v", e.purges, e.forgot)
	}
	if r = e.get(t, enc); r.header.Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("after invalidate: %q, want MISS", r.header.Get("X-Prism-Cache"))
	}

	if r = e.get(t, "/_ah/health"); r.status != 200 {
		t.Fatalf("health: %d", r.status)
	}
	e2 := newEnv(t, func(o *Options) { o.Health = func() error { return errors.New("down") } })
	if r = e2.get(t, "/_ah/health"); r.status != 503 {
		t.Fatalf("unhealthy: %d", r.status)
	}
}

func TestEdgeCometRenderSource(t *testing.T) {
	e := newEnv(t)
	u := "/render?url=" + url.QueryEscape("https://site.test/ec")
	r := e.get(t, u, "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.status != 200 || r.header.Get("X-Render-Source") != "rendered" || r.header.Get("X-Render-Cache") != "new" {
		t.Fatalf("first: %d %q %q", r.status, r.header.Get("X-Render-Source"), r.header.Get("X-Render-Cache"))
	}
	r = e.get(t, u, "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.header.Get("X-Render-Source") != "cache" || r.header.Get("X-Render-Cache") != "hit" || r.header.Get("X-Prism-Cache") != "HIT" {
		t.Fatalf("second: %q %q", r.header.Get("X-Render-Source"), r.header.Get("X-Render-Cache"))
	}
	r = e.get(t, "/render?url="+url.QueryEscape("https://site.test/fail"), "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.status != 200 || r.header.Get("X-Render-Source") != "bypass" || !strings.Contains(r.body, "origin page /fail") {
		t.Fatalf("failure: %d %q %q", r.status, r.header.Get("X-Render-Source"), r.body)
	}
	// prerender requests carry no X-Render-Source.
	if r = e.get(t, "/https://site.test/ec", "User-Agent: "+googlebot); r.header.Get("X-Render-Source") != "" {
		t.Fatalf("prerender answer with X-Render-Source %q", r.header.Get("X-Render-Source"))
	}
}

func TestTargetFromPath(t *testing.T) {
	for _, tc := range []struct{ uri, prefix, want, own string }{
		{"/https://a.test/x?y=1", "/", "https://a.test/x?y=1", ""},
		{"/https:/a.test/x", "/", "https://a.test/x", ""},
		{"/http:/a.test", "/", "http://a.test", ""},
		{"/https%3A%2F%2Fa.test%2Fx%3Fy%3D1", "/", "https://a.test/x?y=1", ""},
		{"/https%253A%252F%252Fa.test%252Fx", "/", "https://a.test/x", ""},
		{"/render/https%3A%2F%2Fa.test%2Fx%3Fy%3D1?mobile", "/render/", "https://a.test/x?y=1", "mobile="},
		{"/render/https://a.test/x?y=1&mobile&z=2", "/render/", "https://a.test/x?y=1&z=2", "mobile="},
		{"/render/https://a.test/x?mobile", "/render/", "https://a.test/x", "mobile="},
		{"/products/x", "/", "products/x", ""},
		// An encoded URL with the page's query after it (not inside).
		{"/https%3A%2F%2Fa.test%2Fx?y=1&z=2", "/", "https://a.test/x?y=1&z=2", ""},
		{"/render/https%3A%2F%2Fa.test%2Fx?mobile&y=1", "/render/", "https://a.test/x?y=1", "mobile="},
		{"/invalidate/https%3A%2F%2Fa.test%2Fx?y=1", "/invalidate/", "https://a.test/x?y=1", ""},
	} {
		got, own, err := targetFromPath(tc.uri, tc.prefix)
		if err != nil || got != tc.want || own.Encode() != tc.own {
			t.Errorf("targetFromPath(%q) = %q, %q, %v; want %q, %q", tc.uri, got, own.Encode(), err, tc.want, tc.own)
		}
	}
}

// TestTargetFromPathAmbiguous: a query both inside an encoded URL and
// after it is refused, not half dropped.
func TestTargetFromPathAmbiguous(t *testing.T) {
	for _, tc := range []struct{ uri, prefix string }{
		{"/https%3A%2F%2Fa.test%2Fx%3Fy%3D1?z=2", "/"},
		{"/render/https%3A%2F%2Fa.test%2Fx%3Fy%3D1?mobile&z=2", "/render/"},
	} {
		if got, _, err := targetFromPath(tc.uri, tc.prefix); err == nil {
			t.Errorf("targetFromPath(%q) = %q, want an error", tc.uri, got)
		}
	}
	// Only Rendertron's own parameters after the encoded URL: fine.
	if got, own, err := targetFromPath("/render/https%3A%2F%2Fa.test%2Fx%3Fy%3D1?mobile", "/render/"); err != nil || got != "https://a.test/x?y=1" || !own.Has("mobile") {
		t.Errorf("encoded URL with ?mobile = %q %v %v", got, own, err)
	}
}

// FuzzTargetFromPath: no request target crashes the parsing, and whatever
// is accepted for rendering is an absolute URL on the configured host.
func FuzzTargetFromPath(f *testing.F) {
	for _, s := range []string{
		"/https://site.test/x?y=1", "/https:/site.test/x", "/https%3A%2F%2Fsite.test%2F", "/render/https%3A%2F%2Fsite.test",
		"/render/https://site.test/?mobile&a", "/%", "/http:", "/https:///x", "/http://site.test@evil.test/",
		"/http://evil.test\\@site.test/", "/http://[::1]/", "/http://site.test:99999/", "/https%3a%2f%2fsite.test%2f%2e%2e%2f",
	} {
		f.Add(s)
	}
	ou, _ := url.Parse("http://127.0.0.1:1")
	sites, err := site.New(site.Options{Hosts: []site.Host{{ID: 1, Name: "site.test", Origin: ou,
		Dimensions: []site.Dimension{{ID: 1, Name: "desktop", MatchUA: []string{"bot"}}}}}})
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{opts: Options{Sites: sites}}
	f.Fuzz(func(t *testing.T, uri string) {
		for _, prefix := range []string{"/", "/render/", "/invalidate/"} {
			target, _, err := targetFromPath(uri, prefix)
			if err != nil {
				continue
			}
			h, norm, err := s.resolve(target)
			if err != nil {
				continue
			}
			if h.ID != 1 || !strings.HasPrefix(norm, "/") {
				t.Fatalf("%q -> host %d url %q", uri, h.ID, norm)
			}
			u, err := url.Parse(target)
			if err != nil {
				t.Fatalf("%q accepted, but %q does not parse: %v", uri, target, err)
			}
			if _, ok := sites.Match(u.Host); !ok {
				t.Fatalf("%q accepted for host %q", uri, u.Host)
			}
		}
	})
}

// TestStaleAndFallbacks: a stale entry is served (STALE) and offered for a
// recache; past stale_ttl a failed render is a 504 with its reason.
func TestStaleAndFallbacks(t *testing.T) {
	e := newEnv(t)
	u := "/https://site.test/s"
	if r := e.get(t, u, "User-Agent: "+googlebot); r.header.Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("first: %q", r.header.Get("X-Prism-Cache"))
	}
	e.advance(90 * time.Minute) // past the TTL, within stale_ttl
	r := e.get(t, u, "User-Agent: "+googlebot)
	if r.status != 200 || r.header.Get("X-Prism-Cache") != "STALE" || len(e.offers) != 1 {
		t.Fatalf("stale: %d %q, offers %v", r.status, r.header.Get("X-Prism-Cache"), e.offers)
	}
	ec := e.get(t, "/render?url="+url.QueryEscape("https://site.test/s"), "X-Render-Key: k", "User-Agent: "+googlebot)
	if ec.header.Get("X-Render-Source") != "cache" || ec.header.Get("X-Render-Cache") != "stale" {
		t.Fatalf("edgecomet stale: %q %q", ec.header.Get("X-Render-Source"), ec.header.Get("X-Render-Cache"))
	}
	// Too old to serve, and the render fails: a prerender client gets the
	// 504 and its reason; nothing stale is left to serve.
	e.advance(time.Hour)
	e.r.fail.Store(true)
	r = e.get(t, u, "User-Agent: "+googlebot)
	if r.status != 504 || r.header.Get("X-Prerender-504-Reason") != "the page crashed its renderer" {
		t.Fatalf("failed render: %d %q", r.status, r.header.Get("X-Prerender-504-Reason"))
	}
}

// TestOverload: a miss beyond MaxRenders is not queued: prerender gets 503
// with Retry-After, EdgeComet the origin's page.
// TestFallbackIsTheOriginsOwn: an origin's fallback answer cannot claim a
// render or a cache state, its Connection-listed headers and cookies stay
// behind, and a redirect to its own address names the public host.
func TestFallbackIsTheOriginsOwn(t *testing.T) {
	e := newEnv(t)
	e.r.fail.Store(true)
	for _, tc := range []struct{ proto, uri string }{
		{"edgecomet", "/render?url=" + url.QueryEscape("https://site.test/liar")},
		{"rendertron", "/render/" + url.PathEscape("https://site.test/liar")},
	} {
		headers := []string{"User-Agent: " + googlebot}
		if tc.proto == "edgecomet" {
			headers = append(headers, "X-Render-Key: k")
		}
		r := e.get(t, tc.uri, headers...)
		h := r.header
		if r.status != http.StatusFound || h.Get("X-Prism-Cache") != "BYPASS" || h.Get("X-Prism-Partial") != "" ||
			h.Get("X-Secret") != "" || h.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d %v", tc.proto, r.status, h)
		}
		if tc.proto == "edgecomet" && (h.Get("X-Render-Source") != "bypass" || h.Get("X-Render-Cache") != "bypass") {
			t.Errorf("edgecomet: X-Render-Source %q X-Render-Cache %q, want bypass", h.Get("X-Render-Source"), h.Get("X-Render-Cache"))
		}
		if tc.proto == "rendertron" && h.Get("X-Render-Source") != "" {
			t.Errorf("rendertron answer with X-Render-Source %q", h.Get("X-Render-Source"))
		}
		hs, _ := e.srv.opts.Sites.ByID(1)
		if loc := h.Get("Location"); loc != hs.PublicURL("/elsewhere?a=1") {
			t.Errorf("%s: Location %q, want the public host's", tc.proto, loc)
		}
	}
}

// TestFallbackBounds: a fallback body over the limit is refused or cut
// (never passed as the page), and fallbacks beyond MaxFallbacks are
// answered 503 at once.
func TestFallbackBounds(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFallbackBytes = 1000; o.MaxFallbacks = 1 })
	e.r.fail.Store(true)
	ec := func(path string) string { return "/render?url=" + url.QueryEscape("https://site.test"+path) }
	// Without a Content-Length the body streams until the limit, and the
	// connection is then dropped: the client cannot take it for the page.
	r := e.get(t, ec("/huge"), "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.status != -1 {
		t.Fatalf("huge fallback: %d %.80q, want the connection dropped", r.status, r.body)
	}
	held := make(chan resp, 1)
	go func() { held <- e.get(t, ec("/held"), "X-Render-Key: k", "User-Agent: "+googlebot) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.srv.fallbacks) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the held fallback never started")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	r = e.get(t, ec("/other"), "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("fallback beyond the bound: %d %v", r.status, r.header)
	}
	e.release()
	<-held
}

func TestOverload(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxRenders = 1 })
	done := make(chan resp, 1)
	go func() { done <- e.get(t, "/https://site.test/slow", "User-Agent: "+googlebot) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, n := e.srv.opts.Fill.Busy(cachestore.Key{}); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow render never started")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	r := e.get(t, "/https://site.test/other", "User-Agent: "+googlebot)
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.header.Get("X-Prerender-504-Reason") != "too many renders in flight" {
		t.Fatalf("overloaded prerender: %d %q %q", r.status, r.header.Get("Retry-After"), r.header.Get("X-Prerender-504-Reason"))
	}
	r = e.get(t, "/render?url="+url.QueryEscape("https://site.test/other"), "X-Render-Key: k", "User-Agent: "+googlebot)
	if r.status != 200 || r.header.Get("X-Render-Source") != "bypass" {
		t.Fatalf("overloaded edgecomet: %d %q", r.status, r.header.Get("X-Render-Source"))
	}
	close(e.r.gate)
	if r := <-done; r.status != 200 {
		t.Fatalf("slow render: %d", r.status)
	}
}

// FuzzServeHTTP feeds hostile request targets and headers to the handler:
// nothing panics, nothing outside the configured host is rendered, and no
// 5xx comes back while the renderer and the origin are healthy.
func FuzzServeHTTP(f *testing.F) {
	for _, s := range []string{"/https://site.test/x?y=1", "/https:/site.test/a/../b", "/render?url=https%3A%2F%2Fsite.test%2F",
		"/render/https%3A%2F%2Fsite.test%2F%3Fa?mobile", "/invalidate/https://site.test/x", "/%", "/render/%zz", "/_ah/health"} {
		f.Add(s, "gzip", "Googlebot", "")
	}
	e := newEnv(f)
	close(e.r.gate) // /slow must not hold an input for RenderWait
	f.Fuzz(func(t *testing.T, target, accept, ua, key string) {
		for _, v := range []string{accept, ua, key} {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
					return // the server refuses such requests before any handler
				}
			}
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.URL, r.RequestURI, r.RemoteAddr = u, target, "127.0.0.1:1"
		r.Header.Set("User-Agent", ua)
		r.Header.Set("Accept-Encoding", accept)
		if key != "" {
			r.Header.Set("X-Render-Key", key)
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%q: status %d: %q", target, w.Code, w.Body)
		}
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		for _, req := range e.r.reqs {
			if !strings.HasPrefix(req.URL, "https://site.test/") {
				t.Fatalf("%q rendered %q", target, req.URL)
			}
		}
	})
}

// TestPanicAfterTheAnswerBegan: a panic once the answer is being written
// drops the connection rather than end it as an empty 200; one before
// gives a 500 with the error body.
func TestPanicAfterTheAnswerBegan(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Served = func(cachestore.Key) { panic("hook broke") } })
	if r := e.get(t, "/https://site.test/p", "User-Agent: "+googlebot); r.status != 200 {
		t.Fatalf("first render: %d", r.status)
	}
	// The hit calls Served, which panics after the answer began.
	if r := e.get(t, "/https://site.test/p", "User-Agent: "+googlebot); r.status != -1 {
		t.Fatalf("panic after the answer began: %d %q, want the connection dropped", r.status, r.body)
	}
}

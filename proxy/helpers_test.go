package proxy

import (
	"context"
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
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

const (
	uaPerson    = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
	uaGooglebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	uaMobileBot = "Mozilla/5.0 (Linux; Android 6.0.1) Mobile Safari/537.36 (compatible; Googlebot/2.1)"
)

// originLog records what the test origin received.
type originLog struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (o *originLog) add(r *http.Request, body string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, r.Clone(context.Background()))
	o.body = append(o.body, body)
}

func (o *originLog) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.reqs)
}

func (o *originLog) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.reqs) == 0 {
		t.Fatal("origin received no request")
	}
	return o.reqs[len(o.reqs)-1], o.body[len(o.body)-1]
}

// fakeRender is the browser seam: tests set fn; calls are counted.
type fakeRender struct {
	calls atomic.Int64
	mu    sync.Mutex
	fn    func(context.Context, prerender.Request) (*prerender.Result, error)
	last  prerender.Request
}

func (f *fakeRender) set(fn func(context.Context, prerender.Request) (*prerender.Result, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fn = fn
}

func (f *fakeRender) render(ctx context.Context, req prerender.Request) (*prerender.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	fn := f.fn
	f.last = req
	f.mu.Unlock()
	return fn(ctx, req)
}

func htmlResult(status int, html string) func(context.Context, prerender.Request) (*prerender.Result, error) {
	return func(context.Context, prerender.Request) (*prerender.Result, error) {
		return &prerender.Result{Status: status, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}}, HTML: []byte(html)}, nil
	}
}

// clock is an injected, settable time.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

type harness struct {
	t       testing.TB
	p       *Proxy
	fill    *fill.Pipeline
	origin  *httptest.Server
	olog    *originLog
	store   *cachestore.Store
	render  *fakeRender
	clock   *clock
	sites   *site.Table
	metrics *metricdoc.Set

	mu       sync.Mutex
	enqueued []cachestore.Key
	stored   []*cachestore.Entry
}

// testOptions are a harness's Proxy options and the options of the fill
// pipeline under it.
type testOptions struct {
	Options
	FillOpts fill.Options
}

type harnessOpt func(*testOptions)

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, olog: &originLog{}, render: &fakeRender{}, clock: newClock(), metrics: metricdoc.NewSet()}
	h.render.set(htmlResult(200, "<!DOCTYPE html><html><body>rendered</body></html>"))
	h.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.olog.add(r, string(b))
		switch r.URL.Path {
		case "/missing":
			http.Error(w, "origin not found", http.StatusNotFound)
			return
		case "/slow":
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("X-Origin", "yes")
		io.WriteString(w, "origin page "+r.Method+" "+r.URL.RequestURI())
	}))
	t.Cleanup(h.origin.Close)
	ou, _ := url.Parse(h.origin.URL)
	sites, err := site.New(site.Options{Hosts: []site.Host{{
		ID: 1, Name: "example.com", Aliases: []string{"www.example.com"}, Origin: ou,
		Dimensions: []site.Dimension{
			{ID: 1, Name: "mobile", MatchUA: []string{"re:mobile.*googlebot"}, Mobile: true, Width: 412, Height: 915, RenderUA: "MobileChrome"},
			{ID: 2, Name: "desktop", MatchUA: []string{"@crawlers"}, Width: 1366, Height: 768},
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	h.sites = sites
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: logger, Now: h.clock.now, MemoryBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	h.store = store
	o := testOptions{
		Options: Options{
			Sites: sites, Store: store,
			Offer: func(k cachestore.Key) bool {
				h.mu.Lock()
				h.enqueued = append(h.enqueued, k)
				h.mu.Unlock()
				return true
			},
			Track:          func(e *cachestore.Entry) { h.mu.Lock(); h.stored = append(h.stored, e); h.mu.Unlock() },
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			Logger:         logger,
			Metrics:        h.metrics,
			Now:            h.clock.now,
		},
		FillOpts: fill.Options{
			Sites: sites, Store: store, Render: h.render.render,
			TTL: time.Hour, StaleTTL: 2 * time.Hour, NotFoundTTL: 10 * time.Minute,
			Logger: logger, Metrics: h.metrics, Now: h.clock.now,
		},
	}
	for _, f := range opts {
		f(&o)
	}
	fp, err := fill.New(o.FillOpts)
	if err != nil {
		t.Fatal(err)
	}
	h.fill = fp
	o.Options.Fill = fp
	p, err := New(o.Options)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// do serves one request through the proxy (in-process, like a server would).
func (h *harness) do(method, target, ua string, opts ...reqOpt) *httptest.ResponseRecorder {
	h.t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("form=1")
	}
	r := httptest.NewRequest(method, target, body) // Host: example.com unless target names one
	if ua != "" {
		r.Header.Set("User-Agent", ua)
	}
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	h.p.ServeHTTP(w, r)
	return w
}

func (h *harness) enqueuedKeys() []cachestore.Key {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]cachestore.Key(nil), h.enqueued...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition, not waiting for time
	}
}

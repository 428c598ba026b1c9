// Package proxy is the public port's http.Handler: host routing, crawler
// detection, the bot path (cache, render, fallback) and a reverse proxy for
// everyone else.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// Options configures a Proxy.
type Options struct {
	Sites *site.Table       // required
	Store *cachestore.Store // required: hits are read from it
	Fill  *fill.Pipeline    // required: misses are rendered and stored through it
	// Offer asks for a recache of k (stale hits), e.g. the scheduler's
	// Offer, and reports whether it was taken (the proxy goes on either
	// way); nil: none. It must not block: it runs on the request's
	// goroutine.
	Offer func(k cachestore.Key) bool
	// Served is told of every crawler request answered from the cache
	// (HIT or STALE), e.g. the scheduler's Served, to keep autorecaching
	// pages crawlers ask for; nil: none. It must not block.
	Served func(k cachestore.Key)
	// Track is told of every entry a crawler's miss stored, e.g. the
	// scheduler's Track (to schedule its autorecache); nil: none.
	Track func(e *cachestore.Entry)
	// TrustedProxies may set X-Forwarded-Host/-For/-Proto. Empty: nobody;
	// those headers from clients are ignored and replaced.
	TrustedProxies []netip.Prefix
	// IdentityCacheBytes bounds the decompressed copies of recently served
	// entries kept for crawlers that do not accept gzip (entries are stored
	// gzip-compressed). 0: 16 MiB; negative: none (every such hit inflates
	// the stored body).
	IdentityCacheBytes int64
	// MaxRenders bounds the renders in flight (waiting for a tab or
	// rendering). A crawler's miss beyond it is not queued: it gets the
	// origin's own response (BYPASS), so a flood of unique URLs cannot pile
	// up behind the browser. 0: 16 per tab (Tabs).
	MaxRenders int
	// Tabs is the renderer's tab count, which sizes MaxRenders' default;
	// 0: 4.
	Tabs int
	// RenderWait is the longest a crawler waits for a render before it gets
	// the stale copy or the origin's response instead (the render goes on
	// for the other waiters). 0: RenderTimeout + 5s (a tab may free up
	// while the render waits for it).
	RenderWait time.Duration
	// RenderTimeout is the renderer's timeout per render, which sizes
	// RenderWait's default; 0: 15s.
	RenderTimeout time.Duration
	// FallbackTimeout bounds the origin fetch that answers a crawler when
	// its render failed (BYPASS), body included: past it the crawler gets
	// a 504, or, when the status line already went out, a cut transfer.
	// 0: 10s.
	FallbackTimeout time.Duration
	// OriginHeaderTimeout is the longest PRISM waits for an origin's
	// response headers (pass-through and BYPASS) before answering 504; keep
	// it below the server's write timeout so the 504 can still be sent. It
	// applies to the default transport only. 0: 30s.
	OriginHeaderTimeout time.Duration
	// Transport reaches the origins; nil: a tuned http.Transport.
	Transport http.RoundTripper
	Logger    *slog.Logger   // nil: slog.Default()
	Metrics   *metricdoc.Set // nil: no metrics registered
	Now       func() time.Time
}

// Proxy serves the public port. It is safe for concurrent use.
type Proxy struct {
	opts Options
	// systemClock is set when Options.Now is time.Now: a cache hit then
	// reads the clock once, not twice (a clock read is a visible part of
	// a hit's cost).
	systemClock bool
	log         *slog.Logger
	rp          *httputil.ReverseProxy
	bufs        *bufferPool // copy buffers of rp and of originWriter

	gzReaders sync.Pool // *gzipReader
	ident     *identityCache
	hdr       *headerValues

	m proxyMetrics
}

var _ http.Handler = (*Proxy)(nil)

// New checks opts and builds a Proxy.
func New(opts Options) (*Proxy, error) {
	var errs []error
	if opts.Sites == nil {
		errs = append(errs, errors.New("Options.Sites is required"))
	}
	if opts.Store == nil {
		errs = append(errs, errors.New("Options.Store is required"))
	}
	if opts.Fill == nil {
		errs = append(errs, errors.New("Options.Fill is required"))
	}
	for _, pfx := range opts.TrustedProxies {
		if !pfx.IsValid() {
			errs = append(errs, fmt.Errorf("trusted proxy %v: invalid prefix", pfx))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("proxy: %w", errors.Join(errs...))
	}
	if opts.Tabs <= 0 {
		opts.Tabs = 4
	}
	if opts.MaxRenders <= 0 {
		opts.MaxRenders = 16 * opts.Tabs
	}
	if opts.RenderTimeout <= 0 {
		opts.RenderTimeout = 15 * time.Second
	}
	if opts.RenderWait <= 0 {
		opts.RenderWait = opts.RenderTimeout + 5*time.Second
	}
	if opts.IdentityCacheBytes == 0 {
		opts.IdentityCacheBytes = 16 << 20
	}
	if opts.FallbackTimeout <= 0 {
		opts.FallbackTimeout = 10 * time.Second
	}
	if opts.OriginHeaderTimeout <= 0 {
		opts.OriginHeaderTimeout = 30 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = site.NewOriginTransport(opts.OriginHeaderTimeout)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	systemClock := opts.Now == nil
	if systemClock {
		opts.Now = time.Now
	}
	opts.TrustedProxies = append([]netip.Prefix(nil), opts.TrustedProxies...)
	p := &Proxy{
		opts:        opts,
		systemClock: systemClock,
		log:         opts.Logger,
		ident:       newIdentityCache(opts.IdentityCacheBytes),
		hdr:         newHeaderValues(opts.Sites),
		m:           newProxyMetrics(opts.Metrics),
	}
	p.bufs = newBufferPool(128, 32<<10)
	p.rp = p.newReverseProxy()
	return p, nil
}

// ServeHTTP routes r to the bot path or the origin.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var wrote bool // something may have reached w: a panic must not write again
	defer p.recoverPanic(w, r, &wrote)

	h, ok := p.opts.Sites.Match(p.publicHost(r))
	if !ok {
		writeJSONError(w, http.StatusMisdirectedRequest, "unknown host")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead || isRenderRequest(r) ||
		p.opts.Sites.IsStatic(r.URL.Path) {
		wrote = true
		p.pass(w, r, h)
		return
	}
	dim, ok := p.opts.Sites.Detect(h, headerValue(r.Header, "User-Agent"))
	if !ok {
		wrote = true
		p.pass(w, r, h)
		return
	}
	p.serveBot(w, r, h, dim, &wrote)
}

// headerValue is Header.Get for a key already in canonical form: the server
// stores request header keys canonical, and canonicalizing the key again
// on every lookup was a measurable part of a cache hit.
func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// isRenderRequest reports requests made by PRISM's own browser.
func isRenderRequest(r *http.Request) bool {
	_, ok := r.Header[prerender.RenderHeader]
	return ok
}

// recoverPanic turns a panic in ServeHTTP into a log line and, when nothing
// was written yet, a 500. http.ErrAbortHandler (the reverse proxy's way of
// aborting a response) is passed on to the server.
func (p *Proxy) recoverPanic(w http.ResponseWriter, r *http.Request, wrote *bool) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	p.m.panics.Inc()
	p.log.Error("proxy: panic serving request", "host", r.Host, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	if !*wrote {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
	}
}

// publicHost returns the host the client asked for: X-Forwarded-Host when
// the peer is a trusted proxy and sent one (its first value), else r.Host.
func (p *Proxy) publicHost(r *http.Request) string {
	if len(p.opts.TrustedProxies) == 0 {
		return r.Host
	}
	vv := r.Header["X-Forwarded-Host"]
	if len(vv) == 0 || !p.trusted(r) {
		return r.Host
	}
	v, _, _ := strings.Cut(vv[0], ",")
	if v = strings.TrimSpace(v); v == "" {
		return r.Host
	}
	return v
}

// trusted reports whether r's peer is a trusted proxy.
func (p *Proxy) trusted(r *http.Request) bool {
	if len(p.opts.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, pfx := range p.opts.TrustedProxies {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// writeJSONError writes {"error": msg}. msg is one of this package's fixed
// strings, so it needs no escaping.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + msg + `"}` + "\n"))
}

// proxyMetrics are the proxy's counters; without a metricdoc.Set they are
// unregistered (they count, nothing exports them).
type proxyMetrics struct {
	hit, miss, stale, bypass, pass *metrics.Counter
	badURL, panics, overload       *metrics.Counter
	originErrors                   *metrics.Counter
	renderWait                     *metrics.PrometheusHistogram
	hitTime                        *metrics.PrometheusHistogram
}

// Bucket bounds, in seconds: a crawler's wait for a render runs from 50 ms
// to RenderWait (render.timeout + 5 s); an answer from the cache from
// 100 µs (memory) to 1 s (a slow disk, a slow client).
var (
	renderWaitBuckets = []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60}
	hitBuckets        = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
)

func newProxyMetrics(s *metricdoc.Set) proxyMetrics {
	const requests = "Crawler requests answered, by cache status (hit, miss, stale, bypass), and people's requests passed to the origin (pass)."
	return proxyMetrics{
		hit:          s.Counter(`prism_requests_total{status="hit"}`, requests),
		miss:         s.Counter(`prism_requests_total{status="miss"}`, requests),
		stale:        s.Counter(`prism_requests_total{status="stale"}`, requests),
		bypass:       s.Counter(`prism_requests_total{status="bypass"}`, requests),
		pass:         s.Counter(`prism_requests_total{status="pass"}`, requests),
		badURL:       s.Counter(`prism_proxy_bad_requests_total`, "Crawler requests refused with 400 for a URL that does not normalize."),
		panics:       s.Counter(`prism_proxy_panics_total`, "Panics recovered while answering a request or rendering (the request got a 5xx or a fallback)."),
		overload:     s.Counter(`prism_proxy_render_overload_total`, "Crawler misses not rendered because too many renders were in flight (served as bypass)."),
		originErrors: s.Counter(`prism_proxy_origin_errors_total`, "Requests passed to the origin that failed before an answer went out (502 or 504)."),
		renderWait: s.Histogram(`prism_proxy_render_seconds`,
			"Time a crawler waited for a render (its own or one it joined), in seconds.", renderWaitBuckets),
		hitTime: s.Histogram(`prism_proxy_hit_seconds`,
			"Time to answer a crawler from the cache (HIT or STALE, no render waited for), in seconds.", hitBuckets),
	}
}

// counter returns the request counter for a cache state.
func (m *proxyMetrics) counter(state fill.CacheState) *metrics.Counter {
	switch state {
	case fill.CacheHit:
		return m.hit
	case fill.CacheMiss:
		return m.miss
	case fill.CacheStale:
		return m.stale
	}
	return m.bypass
}

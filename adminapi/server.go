// Package adminapi serves PRISM's admin port (spec/admin-api.txt): health,
// status, metrics, purge, forced renders and sitemap warmup.
//
// Where the spec is silent:
//   - Every path but /health needs the token, unknown ones too (401 before 404).
//   - Bodies over 1 MB answer 413; malformed JSON, unknown fields and
//     trailing data answer 400.
//   - POST /purge/url: a path is purged on every configured host, a full URL
//     on its host only; both in every dimension.
//   - POST /purge/pattern: a glob ('/' separates segments: `*` stays in one,
//     `**` crosses them) matched against each entry's path and against its
//     path plus query; "https://host/glob" restricts it to that host.
//   - POST /render: a path is taken on the first configured host; the
//     dimension defaults to the host's first; a render whose result is not
//     cacheable (e.g. a 5xx page) answers 500.
//   - Warmup: DELETE /warmup or POST /warmup/cancel cancels it; it then ends
//     "completed" with error_message "cancelled". See warmup.go for how
//     total, processed and errors are counted. A site root or a robots.txt
//     URL warms the sitemaps its robots.txt lists (robots.go).
//     /warmup/status adds failed_urls (the first 100 failures) and
//     truncated (more URLs than WarmupOptions.MaxURLs) to the spec's fields.
package adminapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// MaxBodyBytes is the largest request body the admin API accepts.
const MaxBodyBytes = 1 << 20

// Options configures a Server.
type Options struct {
	// Token is the bearer token every endpoint but GET /health requires.
	// Empty means no authentication (main then insists on a loopback address).
	Token string
	// Sites is the host table; required.
	Sites *site.Table
	// Store is the render cache; required.
	Store *cachestore.Store
	// Refresh renders k now in the given capacity class and stores the
	// result, for POST /render; required (fill.Pipeline.Refresh in
	// production).
	Refresh func(ctx context.Context, k cachestore.Key, class prerender.Class) (fill.Outcome, error)
	// Track is told of every entry /render stored, e.g. the scheduler's
	// Track (to schedule its autorecache); nil: none.
	Track func(e *cachestore.Entry)
	// Warm renders a warmup's keys as background work and reports each
	// once it is settled (nil error: stored), returning when all are or
	// when ctx ends; required (recache.Scheduler.Warm in production, so
	// that warmups share the recache queue's tabs, fairness and retry
	// policy).
	Warm func(ctx context.Context, keys []cachestore.Key, done func(cachestore.Key, error)) error
	// Warmup paces warmups and caps their size; the zero value is no
	// pacing of its own (the scheduler's bounds) and 50,000 URLs.
	Warmup WarmupOptions
	// Cluster delivers purges to the other nodes and adds a cluster block
	// to /status (cluster.Node); nil: a single node.
	Cluster interface {
		Purge(ctx context.Context, p cluster.Purge) cluster.PurgeResult
		Info(ctx context.Context) cluster.Info
	}
	// Health reports whether PRISM can render; nil means always healthy. A
	// non-nil error's text is the 503 reason.
	Health func() error
	// Renders returns render counters for /status; nil means zeros.
	Renders func() prerender.Stats
	// Pool returns the tab pool snapshot for /status; nil means zeros.
	Pool func() prerender.Capacity
	// QueueDepth returns the recache internal queue depth; nil means 0.
	QueueDepth func() int
	// Metrics is written by GET /metrics (with the Go runtime and process
	// figures); nil means those figures only. New registers
	// prism_pool_size, prism_pool_available and prism_uptime_seconds gauges
	// in it (GetOrCreate, so sharing is safe).
	Metrics *metricdoc.Set
	// HTTPClient fetches sitemaps; nil means a client that sends requests for
	// configured hosts to their origins (with X-Prism-Render: 1) and refuses
	// every other destination.
	HTTPClient *http.Client
	// Start is when PRISM started, for uptime; zero means when New ran.
	Start time.Time
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives admin actions and internal errors; nil means slog.Default().
	Logger *slog.Logger
}

// Server is the admin API's http.Handler. It is safe for concurrent use.
// Run must be running for POST /warmup to be accepted.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	tokenSum [sha256.Size]byte
	draining atomic.Bool
	client   *http.Client
	limits   sitemapLimits

	// jobs hands an accepted warmup to Run; capacity 1 and the warmup state
	// machine guarantee the send never blocks.
	jobs chan *warmupJob
	// running is true while Run is running; written under mu.
	running atomic.Bool

	mu     sync.Mutex // guards warmup and the running/jobs hand-over
	warmup *warmupJob // the latest warmup, nil before the first
}

var _ http.Handler = (*Server)(nil)

// Errors returned by New.
var (
	ErrNoSites   = errors.New("adminapi: Sites is required")
	ErrNoStore   = errors.New("adminapi: Store is required")
	ErrNoRefresh = errors.New("adminapi: Refresh is required")
	ErrNoWarm    = errors.New("adminapi: Warm is required")
)

// New checks opts, fills in defaults and builds a Server.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Sites == nil:
		return nil, ErrNoSites
	case opts.Store == nil:
		return nil, ErrNoStore
	case opts.Refresh == nil:
		return nil, ErrNoRefresh
	case opts.Warm == nil:
		return nil, ErrNoWarm
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Start.IsZero() {
		opts.Start = opts.Now()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Renders == nil {
		opts.Renders = func() prerender.Stats { return prerender.Stats{} }
	}
	if opts.Pool == nil {
		opts.Pool = func() prerender.Capacity { return prerender.Capacity{} }
	}
	if opts.QueueDepth == nil {
		opts.QueueDepth = func() int { return 0 }
	}
	if opts.Warmup.Concurrency < 0 {
		opts.Warmup.Concurrency = 0
	}
	if opts.Warmup.Rate < 0 {
		opts.Warmup.Rate = 0
	}
	if opts.Warmup.MaxURLs <= 0 {
		opts.Warmup.MaxURLs = defaultSitemapLimits.maxURLs
	}
	if opts.Warmup.Sleep == nil {
		opts.Warmup.Sleep = sleepCtx
	}
	s := &Server{
		opts:     opts,
		tokenSum: sha256.Sum256([]byte(opts.Token)),
		client:   opts.HTTPClient,
		limits:   defaultSitemapLimits,
		jobs:     make(chan *warmupJob, 1),
	}
	s.limits.maxURLs = opts.Warmup.MaxURLs
	if s.client == nil {
		s.client = originClient(opts.Sites)
	}
	if m := opts.Metrics; m != nil {
		pool, start, now := opts.Pool, opts.Start, opts.Now
		m.Gauge("prism_pool_size", "Tabs in the render pool (as /status reports them).",
			func() float64 { return float64(pool().Tabs) })
		m.Gauge("prism_pool_available", "Tabs of the render pool free for a render (as /status reports them).",
			func() float64 { return float64(pool().Free) })
		m.Gauge("prism_uptime_seconds", "Time since PRISM started, in seconds.",
			func() float64 { return now().Sub(start).Seconds() })
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	handle := func(method, path string, h func(http.ResponseWriter, *http.Request) error) {
		mux.Handle(method+" "+path, s.adapt(h))
	}
	handle("GET", "/health", s.handleHealth)
	handle("GET", "/status", s.handleStatus)
	handle("GET", "/metrics", s.handleMetrics)
	handle("POST", "/purge/url", s.handlePurgeURL)
	handle("POST", "/purge/pattern", s.handlePurgePattern)
	handle("POST", "/purge/all", s.handlePurgeAll)
	handle("POST", "/render", s.handleRender)
	handle("POST", "/warmup", s.handleWarmup)
	handle("DELETE", "/warmup", s.handleWarmupCancel)
	handle("POST", "/warmup/cancel", s.handleWarmupCancel)
	handle("GET", "/warmup/status", s.handleWarmupStatus)

	// The same paths with any other method: 405 with JSON. The method-less
	// patterns are less specific, so they only catch what the ones above miss.
	allow := map[string]string{
		"/health": "GET, HEAD", "/status": "GET, HEAD", "/metrics": "GET, HEAD",
		"/purge/url": "POST", "/purge/pattern": "POST", "/purge/all": "POST",
		"/render": "POST", "/warmup": "POST, DELETE", "/warmup/cancel": "POST",
		"/warmup/status": "GET, HEAD",
	}
	for path, methods := range allow {
		mux.Handle(path, s.adapt(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", methods)
			return errorf(http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, methods)
		}))
	}
	mux.Handle("/", s.adapt(func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, "unknown endpoint")
	}))
	s.mux = mux
}

// ServeHTTP checks the bearer token (except for /health) and routes r.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.opts.Logger.Error("admin: panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
			writeJSON(w, http.StatusInternalServerError, errorBody{"internal error"})
		}
	}()
	if r.URL.Path != "/health" && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="prism-admin"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{"missing or invalid bearer token"})
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authorized compares the request's bearer token with the configured one in
// constant time (hashing both first, so the length does not leak either).
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// Drain makes /health answer 503 "draining" from now on.
func (s *Server) Drain() { s.draining.Store(true) }

// Run runs accepted warmups one at a time until ctx is done; it then cancels
// a running warmup, waits for it and returns nil.
func (s *Server) Run(ctx context.Context) error {
	s.setRunning(true)
	defer s.setRunning(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case job := <-s.jobs:
			s.runWarmup(ctx, job)
		}
	}
}

// httpError is an error with the status and client message the API answers.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error string `json:"error"`
}

// adapt turns a handler that returns an error into an http.Handler: the one
// place where errors become status codes and {"error": ...} bodies.
func (s *Server) adapt(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *httpError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &he):
			writeJSON(w, he.status, errorBody{he.msg})
		case errors.As(err, &mbe):
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{fmt.Sprintf("request body larger than %d bytes", mbe.Limit)})
		default:
			s.opts.Logger.Error("admin: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusInternalServerError, errorBody{"internal error"})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeBody decodes r's JSON body into v: at most MaxBodyBytes, unknown
// fields and trailing data refused.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "invalid JSON body: body is empty")
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: %s", jsonErrorText(err))
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "invalid JSON body: trailing data after the object")
	}
	// Read to the end so an oversized body is reported even after a valid object.
	if _, err := dec.Token(); err != nil && !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: %s", jsonErrorText(err))
	}
	return nil
}

// jsonErrorText is a decoder error without the package prefix.
func jsonErrorText(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

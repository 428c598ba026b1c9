// Package service is the render-service port: it speaks the protocols
// existing middlewares use to call a render service, so they can switch to
// PRISM by changing one URL:
//
//   - prerender (prerender-node, prerender_rails, nginx and worker
//     recipes): GET /<absolute-url>, GET|POST /render?url=..., with
//     X-Prerender-Token and the crawler's User-Agent;
//   - Rendertron (rendertron-middleware): GET /render/<url> (?mobile),
//     /invalidate/<url>, /_ah/health;
//   - EdgeComet's gateway: GET /render?url=... with X-Render-Key, answered
//     with X-Render-Source.
//
// Pages come from the same cache, fill pipeline (one render per key,
// shared with crawler misses), dimensions and fallbacks as the proxy.
// Only URLs of configured hosts are rendered: the port never fetches an
// arbitrary URL.
package service

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/site"
)

// Options configures a Server.
type Options struct {
	Sites *site.Table       // required: hosts a URL may name, dimensions
	Store *cachestore.Store // required: hits, invalidation
	Fill  *fill.Pipeline    // required: misses are rendered and stored through it
	// Tokens: when non-empty, prerender requests must carry one of them in
	// X-Prerender-Token and EdgeComet requests in X-Render-Key (compared
	// in constant time). Empty: no token is asked for.
	Tokens []string
	// AllowFrom are the client addresses allowed on the Rendertron routes
	// (/render/<url>, /invalidate/<url>), which carry no token. Nil: none
	// (main passes service.allow_from, loopback by default).
	AllowFrom []netip.Prefix
	// DefaultDimension names the dimension used when the User-Agent
	// matches none of the host's (and for Rendertron); a host without it,
	// and "", use the host's first non-mobile dimension, else its first.
	DefaultDimension string
	// Offer, Served and Track are the proxy's hooks of the same names
	// (recache of stale hits, autorecache of served pages, scheduling of
	// stored renders); nil: none. They must not block.
	Offer  func(k cachestore.Key) bool
	Served func(k cachestore.Key)
	Track  func(e *cachestore.Entry)
	// Forget drops keys from the recache queues before an invalidation
	// (the scheduler's Forget); nil: none.
	Forget func(keys ...cachestore.Key)
	// Cluster delivers invalidations to the other nodes (cluster.Node);
	// nil: a single node.
	Cluster interface {
		Purge(ctx context.Context, p cluster.Purge) cluster.PurgeResult
	}
	// Health reports whether PRISM can render (/_ah/health); nil: always.
	Health func() error
	// MaxRenders bounds the renders in flight; a miss beyond it is not
	// queued (the same answer as a failed render). 0: 64.
	MaxRenders int
	// RenderWait is the longest a request waits for a render. 0: 20s.
	RenderWait time.Duration
	// FallbackTimeout bounds the origin fetch that answers EdgeComet and
	// Rendertron requests whose render failed. 0: 10s.
	FallbackTimeout time.Duration
	// MaxFallbackBytes bounds that origin response's body (streamed, not
	// held). 0: 20 MiB.
	MaxFallbackBytes int64
	// MaxFallbacks bounds the origin fallbacks in flight at once; more are
	// answered 503 with Retry-After. 0: 32.
	MaxFallbacks int
	// WriteTimeout is the server's write timeout: a fallback gets no more
	// than what is left of it (less a second), so that the client always
	// gets an answer. 0: no such bound.
	WriteTimeout time.Duration
	// Transport reaches the origins for fallbacks; nil: a tuned transport.
	Transport http.RoundTripper
	Logger    *slog.Logger   // nil: slog.Default()
	Metrics   *metricdoc.Set // nil: no metrics registered
	Now       func() time.Time
}

// maxBody bounds a POST /render body.
const maxBody = 64 << 10

// Server is the service port's http.Handler. It is safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	tokens [][sha256.Size]byte
	client *http.Client // fallback fetches: redirects returned, not followed
	// fallbacks holds a token per origin fallback in flight.
	fallbacks chan struct{}
	m         serviceMetrics
}

var _ http.Handler = (*Server)(nil)

// New checks opts and builds a Server.
func New(opts Options) (*Server, error) {
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
	for i, t := range opts.Tokens {
		if t == "" {
			errs = append(errs, fmt.Errorf("Options.Tokens[%d] is empty", i))
		}
	}
	for _, p := range opts.AllowFrom {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("allow_from %v: invalid prefix", p))
		}
	}
	if opts.DefaultDimension != "" && opts.Sites != nil {
		found := false
		for _, h := range opts.Sites.Hosts() {
			if _, ok := h.DimensionByName(opts.DefaultDimension); ok {
				found = true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("default dimension %q is not a dimension of any host", opts.DefaultDimension))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("service: %w", errors.Join(errs...))
	}
	if opts.MaxRenders <= 0 {
		opts.MaxRenders = 64
	}
	if opts.RenderWait <= 0 {
		opts.RenderWait = 20 * time.Second
	}
	if opts.FallbackTimeout <= 0 {
		opts.FallbackTimeout = 10 * time.Second
	}
	if opts.MaxFallbackBytes <= 0 {
		opts.MaxFallbackBytes = 20 << 20
	}
	if opts.MaxFallbacks <= 0 {
		opts.MaxFallbacks = 32
	}
	if opts.Transport == nil {
		opts.Transport = site.NewOriginTransport(30 * time.Second)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.AllowFrom = append([]netip.Prefix(nil), opts.AllowFrom...)
	s := &Server{
		opts: opts,
		log:  opts.Logger,
		client: &http.Client{
			Transport:     opts.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		fallbacks: make(chan struct{}, opts.MaxFallbacks),
		m:         newServiceMetrics(opts.Metrics),
	}
	for _, t := range opts.Tokens {
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	return s, nil
}

// protocol is the dialect a request speaks; it decides authentication, the
// dimension, and how failures are answered.
type protocol uint8

const (
	protoPrerender protocol = iota
	protoRendertron
	protoEdgeComet
)

func (p protocol) String() string {
	switch p {
	case protoRendertron:
		return "rendertron"
	case protoEdgeComet:
		return "edgecomet"
	}
	return "prerender"
}

// ServeHTTP routes r by protocol.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wrote := false
	defer s.recoverPanic(w, r, &wrote)
	uri := r.RequestURI
	if uri == "" { // a request built in a test, not read from the wire
		uri = r.URL.RequestURI()
	}
	path, _, _ := strings.Cut(uri, "?")
	switch {
	case path == "/_ah/health":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		s.health(w)
	case strings.HasPrefix(path, "/render/"):
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) || !s.allowed(w, r) {
			return
		}
		target, own, err := targetFromPath(uri, "/render/")
		if err != nil {
			s.refuse(w, protoRendertron, http.StatusBadRequest, err.Error())
			return
		}
		s.render(w, r, protoRendertron, target, own.Has("mobile"), &wrote)
	case strings.HasPrefix(path, "/invalidate/"):
		if !allowMethods(w, r, http.MethodGet, http.MethodPost) || !s.allowed(w, r) {
			return
		}
		target, _, err := targetFromPath(uri, "/invalidate/")
		if err != nil {
			s.refuse(w, protoRendertron, http.StatusBadRequest, err.Error())
			return
		}
		s.invalidate(w, r, target)
	case path == "/render":
		proto := protoPrerender
		if _, ok := r.Header["X-Render-Key"]; ok {
			proto = protoEdgeComet
		}
		methods := []string{http.MethodGet, http.MethodHead, http.MethodPost}
		if proto == protoEdgeComet {
			methods = methods[:2]
		}
		if !allowMethods(w, r, methods...) || !s.authorized(w, r, proto) {
			return
		}
		target, err := renderParam(w, r)
		if err != nil {
			s.refuse(w, proto, statusOf(err), err.Error())
			return
		}
		s.render(w, r, proto, target, false, &wrote)
	case len(path) > 1 && path != "/favicon.ico":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) || !s.authorized(w, r, protoPrerender) {
			return
		}
		target, _, err := targetFromPath(uri, "/")
		if err != nil {
			s.refuse(w, protoPrerender, http.StatusBadRequest, err.Error())
			return
		}
		s.render(w, r, protoPrerender, target, false, &wrote)
	default:
		s.refuse(w, protoPrerender, http.StatusNotFound,
			"not a render request: use GET /<absolute-url>, /render?url=<absolute-url>, /render/<url> or /invalidate/<url>")
	}
}

// statusError is an error with the status it is answered with.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.status
	}
	return http.StatusBadRequest
}

// renderParam returns the url of a /render request: the query's, or for
// POST a JSON ({"url": ...}) or form body's, within maxBody.
func renderParam(w http.ResponseWriter, r *http.Request) (string, error) {
	if v := r.URL.Query().Get("url"); v != "" || r.Method != http.MethodPost {
		if v == "" {
			return "", errors.New("url is required: /render?url=<absolute-url>")
		}
		return v, nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
		if err := r.ParseForm(); err != nil {
			return "", bodyError(err)
		}
		if v := r.PostForm.Get("url"); v != "" {
			return v, nil
		}
	default:
		v, err := decodeURLBody(r.Body)
		if err != nil {
			return "", bodyError(err)
		}
		if v != "" {
			return v, nil
		}
	}
	return "", errors.New("url is required: /render?url=<absolute-url> or a JSON body {\"url\": \"...\"}")
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)}
	}
	return fmt.Errorf("invalid body: %v", err)
}

// allowMethods answers 405 with Allow unless r's method is one of methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
	return false
}

// authorized checks the protocol's token when tokens are configured.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, proto protocol) bool {
	if len(s.tokens) == 0 {
		return true
	}
	header := "X-Prerender-Token"
	if proto == protoEdgeComet {
		header = "X-Render-Key"
	}
	got := sha256.Sum256([]byte(r.Header.Get(header)))
	ok := 0
	for i := range s.tokens {
		ok |= subtle.ConstantTimeCompare(got[:], s.tokens[i][:])
	}
	if ok == 1 && r.Header.Get(header) != "" {
		return true
	}
	s.m.refused.Inc()
	s.log.Info("service: request without a valid token", "protocol", proto.String(), "header", header,
		"client", r.RemoteAddr, "user_agent", r.UserAgent())
	writeError(w, http.StatusUnauthorized, "missing or invalid "+header)
	return false
}

// allowed checks a Rendertron route's client address against AllowFrom.
func (s *Server) allowed(w http.ResponseWriter, r *http.Request) bool {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		addr := ap.Addr().Unmap()
		for _, p := range s.opts.AllowFrom {
			if p.Contains(addr) {
				return true
			}
		}
	}
	s.m.refused.Inc()
	s.log.Info("service: rendertron route from a client not in service.allow_from", "client", r.RemoteAddr)
	writeError(w, http.StatusForbidden, "client address not allowed (service.allow_from)")
	return false
}

// resolve maps an absolute URL to its configured host and normalized URL.
func (s *Server) resolve(raw string) (*site.Host, string, error) {
	if _, err := checkAbsolute(raw); err != nil {
		return nil, "", err
	}
	h, norm, err := s.opts.Sites.Resolve(raw, nil)
	switch {
	case errors.Is(err, site.ErrUnknownHost) || (err == nil && h == nil):
		return nil, "", &statusError{http.StatusBadRequest, "url is not on a configured host: PRISM renders only the hosts in its configuration"}
	case err != nil:
		return nil, "", fmt.Errorf("invalid url: %v", errors.Unwrap(err))
	}
	return h, norm, nil
}

// dimension picks the dimension of h for a request.
func (s *Server) dimension(h *site.Host, r *http.Request, proto protocol, mobile bool) (*site.Dimension, error) {
	if mobile {
		for i := range h.Dimensions {
			if h.Dimensions[i].Mobile {
				return &h.Dimensions[i], nil
			}
		}
		return nil, fmt.Errorf("host %s has no mobile dimension (?mobile)", h.Name)
	}
	if proto != protoRendertron {
		if d, ok := s.opts.Sites.Detect(h, r.UserAgent()); ok {
			return d, nil
		}
	}
	if s.opts.DefaultDimension != "" {
		if d, ok := h.DimensionByName(s.opts.DefaultDimension); ok {
			return d, nil
		}
	}
	for i := range h.Dimensions {
		if !h.Dimensions[i].Mobile {
			return &h.Dimensions[i], nil
		}
	}
	if len(h.Dimensions) > 0 {
		return &h.Dimensions[0], nil
	}
	return nil, fmt.Errorf("host %s has no dimensions", h.Name)
}

func (s *Server) health(w http.ResponseWriter) {
	if s.opts.Health != nil {
		if err := s.opts.Health(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unhealthy: cannot render")
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK\n"))
}

// invalidate drops every dimension's entry of the URL (here, from the
// recache queues, and through the cluster).
func (s *Server) invalidate(w http.ResponseWriter, r *http.Request, target string) {
	h, norm, err := s.resolve(target)
	if err != nil {
		s.refuse(w, protoRendertron, statusOf(err), err.Error())
		return
	}
	keys := make([]cachestore.Key, 0, len(h.Dimensions))
	for _, d := range h.Dimensions {
		keys = append(keys, cachestore.Key{HostID: h.ID, DimensionID: d.ID, URL: norm})
	}
	if s.opts.Forget != nil {
		s.opts.Forget(keys...)
	}
	n := 0
	for _, k := range keys {
		if s.opts.Store.Delete(k) {
			n++
		}
	}
	if s.opts.Cluster != nil {
		res := s.opts.Cluster.Purge(r.Context(), cluster.Purge{Keys: keys})
		s.log.Info("service: invalidation delivered to the cluster", "nodes_applied", res.Applied,
			"nodes_live", res.Live, "pending", res.Pending)
	}
	s.m.invalidations.Inc()
	s.log.Info("service: invalidated", "host", h.Name, "path", norm, "entries", n, "client", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "{\"invalidated\":%d}\n", n)
}

// refuse answers a request that names nothing PRISM renders.
func (s *Server) refuse(w http.ResponseWriter, proto protocol, status int, msg string) {
	s.m.refused.Inc()
	writeError(w, status, msg)
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(appendJSONString([]byte(`{"error":`), msg), "}\n"...))
}

// recoverPanic turns a panic into a log line and, when nothing was written
// yet, a 500.
func (s *Server) recoverPanic(w http.ResponseWriter, r *http.Request, wrote *bool) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.m.panics.Inc()
	s.log.Error("service: panic serving request", "uri", r.RequestURI, "panic", v, "stack", string(debug.Stack()))
	if *wrote {
		// An answer was begun: drop the connection rather than let it end
		// as an empty or half-written 200.
		panic(http.ErrAbortHandler)
	}
	if !*wrote {
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// serviceMetrics are the port's counters; unregistered without a Set.
type serviceMetrics struct {
	hit, miss, stale, bypass, failed *metrics.Counter
	refused, invalidations, panics   *metrics.Counter
}

func newServiceMetrics(s *metricdoc.Set) serviceMetrics {
	const req = "Render-service port answers, by how they were served."
	return serviceMetrics{ // a nil Set gives counters that belong to no exported set
		hit:           s.Counter(`prism_service_requests_total{status="hit"}`, req),
		miss:          s.Counter(`prism_service_requests_total{status="miss"}`, req),
		stale:         s.Counter(`prism_service_requests_total{status="stale"}`, req),
		bypass:        s.Counter(`prism_service_requests_total{status="bypass"}`, req),
		failed:        s.Counter(`prism_service_requests_total{status="failed"}`, req),
		refused:       s.Counter(`prism_service_refused_total`, "Render-service requests refused (bad URL, host not configured, token, allow_from, method)."),
		invalidations: s.Counter(`prism_service_invalidations_total`, "Rendertron /invalidate requests served."),
		panics:        s.Counter(`prism_service_panics_total`, "Render-service handler panics recovered (answered 500)."),
	}
}

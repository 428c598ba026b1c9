// Package prerender renders pages in headless Chromium (driven by go-rod): it
// supervises one browser process, keeps a pool of tabs with capacity classes,
// and post-processes the captured HTML.
package prerender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/site"
)

// RenderHeader marks every request PRISM itself sends to an origin (the
// browser's, sitemap fetches): "1". The proxy passes such requests
// straight through, so a render never loops back into the bot path.
const RenderHeader = "X-Prism-Render"

// Class is a render's capacity class.
type Class int

const (
	// Online renders have a crawler waiting: they may take any free tab.
	Online Class = iota
	// Recache renders may take only the tabs left after the online reservation.
	Recache
)

// Request is one page to render.
type Request struct {
	URL       string // absolute public URL, e.g. "https://example.com/a?b=1"
	Width     int    // viewport; 0 means 1366x768
	Height    int
	Mobile    bool
	UserAgent string // empty: a Chrome UA for the device class
	Class     Class
}

// Result is a finished render.
type Result struct {
	Status   int         // document status after meta-tag overrides
	Header   http.Header // Content-Type, Location for redirects, headers from meta tags
	HTML     []byte      // post-processed document with doctype; empty for redirects
	Partial  bool        // captured at the timeout before the page was quiet or ready
	Shown    bool        // the page was shown (laid out and painted), not only hidden
	Duration time.Duration
	// Ended says why the render stopped waiting: EndedReady (the page set
	// prerenderReady), EndedIdle (nothing the page started was still going,
	// by its own signals and the network: see done.go), EndedQuiet (no
	// request in flight for the quiet period, whatever else the page was
	// doing) or EndedTimeout (captured at render.timeout). Empty for answers that
	// were not waited for (redirects, 5xx documents).
	Ended string
	// Settle is how long the page took, from navigation to the end of the
	// wait (Ended's moment); the capture comes after it.
	Settle time.Duration
}

// Why a render stopped waiting (Result.Ended).
const (
	EndedReady   = "ready"
	EndedIdle    = "idle"
	EndedQuiet   = "quiet"
	EndedTimeout = "timeout"
)

// Capacity is a snapshot of the tab pool, as the internal API reports it.
type Capacity struct {
	Tabs                int // configured tabs
	Free                int // tabs not rendering now
	ReservedForOnline   int // of Free, held back for online renders
	AvailableForRecache int // Free - ReservedForOnline
	ReservationPercent  float64
}

// Stats is a snapshot of render counters.
type Stats struct {
	Renders   uint64 // renders finished (success or failure)
	Failures  uint64
	Active    int // renders in progress
	Waiting   int // renders waiting for a tab
	Crashes   uint64
	Restarts  uint64
	BrowserUp bool
}

var (
	// ErrUnavailable means the browser is down (starting, crashed or restarting).
	ErrUnavailable = errors.New("prerender: browser unavailable")
	// ErrNoCapacity means no tab was free for the request's class.
	ErrNoCapacity = errors.New("prerender: no tab available")
	// ErrBlank means the page rendered to an empty document.
	ErrBlank = errors.New("prerender: blank page")
	// ErrBadRequest means the Request itself is invalid (not an absolute
	// http or https URL).
	ErrBadRequest = errors.New("prerender: bad request")
	// ErrPageCrashed means the page's renderer process crashed (a memory
	// bomb, a renderer bug the page triggered): the render ends as soon as
	// the browser reports it, and its tab is replaced.
	ErrPageCrashed = errors.New("prerender: page crashed its renderer")
)

// Options configures a Renderer.
type Options struct {
	// ChromePath is the browser binary; empty searches PATH and the usual
	// Debian/Chrome locations. A missing browser is an error from New.
	ChromePath string
	Tabs       int           // 0 means 4
	Timeout    time.Duration // per render, from taking a tab to capture; 0 means 15s
	// OnlineReservationPercent of the free tabs is held back from recache
	// renders (rounded up); 0 holds none back, values above 100 mean 100.
	OnlineReservationPercent int
	RecycleAfter             int // renders before the browser is restarted; 0 means 1000
	// RecycleMemoryMB restarts the browser when the memory of its process
	// group (proportional set size: shared pages counted once) passes it;
	// 0 means no limit.
	RecycleMemoryMB int
	// Origin maps a public host (as in a URL's Host, port included when
	// present) to the origin that serves it. The browser's requests to such a
	// host are fetched from the origin with X-Prism-Render: 1. Requests to
	// other loopback, private or link-local addresses are refused. Nil means
	// no host has an origin.
	Origin func(hostport string) (*url.URL, bool)
	// BlockResourceTypes are CDP resource types never loaded; nil means
	// Image, Media, Font.
	BlockResourceTypes []string
	// BlockHosts are hosts (and their subdomains) never loaded; nil means a
	// built-in list of analytics and ad hosts.
	BlockHosts []string
	// KeepScriptTypes are script types kept in the output; nil means
	// application/ld+json.
	KeepScriptTypes []string
	// UserDataDir is the parent directory of the per-launch browser profile
	// directories (each removed when its browser exits); empty means the
	// system temp dir.
	UserDataDir string
	Logger      *slog.Logger   // nil discards logs
	Metrics     *metricdoc.Set // nil registers no metrics
	// Transport fetches origin resources for the browser; nil means a
	// dedicated http.Transport.
	Transport http.RoundTripper
	// ProbeInterval is how often the browser is asked for its version to
	// detect a hung browser; 0 means 5s.
	ProbeInterval time.Duration
	// MaxBodyBytes caps every response the renderer fetches for the
	// browser; 0 means 20 MiB. A larger response fails that request.
	MaxBodyBytes int64
	// MaxPageBytes caps the response bytes one render fetches in all; 0
	// means 64 MiB. Requests past it fail, and the render is served as
	// partial (outcome over_limit), never over a complete entry.
	MaxPageBytes int64
	// MaxInflightBytes caps the response bodies held in memory across the
	// browser at once, between fetch and hand-over to Chromium (each costs
	// PRISM about three times its size while it is encoded for DevTools);
	// bodies past 1 MiB are streamed instead (stream.go) and hold none of
	// it. 0 means 32 MiB, and never less than MaxBodyBytes. A request waits
	// for room when its length is known, else fails when there is none.
	MaxInflightBytes int64
	// AlwaysVisible shows every page for its whole render. By default a
	// page renders hidden (not painted) and is shown only once it uses an
	// API that needs frames (see visibility.go).
	AlwaysVisible bool
	// NoBrowserCache turns the browser's cache off: every render fetches
	// every response whole. By default the browser keeps responses across
	// renders and uses one only once its origin answered 304 to the kept
	// copy's validators (browserCacheControl), which holds only for origins
	// whose ETag or Last-Modified change whenever the content does.
	NoBrowserCache bool
	// WarmSites are public base URLs ("https://example.com/") of the sites
	// PRISM renders. Before the first render, each tab renders a page of
	// PRISM's own under one of them in turn (answered inside the tab: no
	// request reaches the origin), so that the tab's renderer process is
	// the one its first render of that site uses. Nil means a site of
	// PRISM's own: a tab's first render then starts its site's process.
	WarmSites []string
	// WarmPath is a page (e.g. "/") each tab then renders for real under
	// its warm site, before the first render, so that the site's own
	// scripts have run once in the tab's renderer. Its requests reach the
	// origin as a render's do (X-Prism-Render: 1); the result is
	// discarded, and a failure (the origin down) is logged and ignored.
	// Empty means none.
	WarmPath string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Renderer renders pages. It is safe for concurrent use.
type Renderer struct {
	opts       Options
	log        *slog.Logger
	blockTypes map[string]bool
	blockHosts []string
	keepTypes  []string
	warmURLs   []string // Options.WarmSites' warm-up pages, or warmURL
	warmPages  []string // Options.WarmPath under each warm site
	originRT   http.RoundTripper
	publicRT   http.RoundTripper
	inflight   *semaphore.Weighted // Options.MaxInflightBytes
	streams    *streamServer       // large bodies to the browser; set by Run

	running atomic.Bool
	cur     atomic.Pointer[instance] // nil while the browser is down
	gen     atomic.Int64
	recycle chan struct{} // a render asks the supervisor to recycle

	renders, failures atomic.Uint64
	crashes, restarts atomic.Uint64
	active, waiting   atomic.Int64
	probeErr          atomic.Pointer[error]
	drains            sync.WaitGroup
	metrics           *rendererMetrics
	// freshTabs closes each tab after its render (an incognito context per
	// render): the costly isolation mode, kept for benchmarks.
	freshTabs bool
}

// chromeCandidates are tried in order when Options.ChromePath is empty.
var chromeCandidates = []string{
	"/usr/lib/chromium/chromium",
	"chromium",
	"chromium-browser",
	"google-chrome",
	"google-chrome-stable",
	"/usr/bin/chromium",
	"/opt/google/chrome/chrome",
}

// New checks opts and locates the browser; Run starts it.
func New(opts Options) (*Renderer, error) {
	bin, err := FindChrome(opts.ChromePath)
	if err != nil {
		return nil, err
	}
	opts.ChromePath = bin
	if opts.Tabs < 0 || opts.Timeout < 0 || opts.RecycleAfter < 0 || opts.OnlineReservationPercent < 0 {
		return nil, fmt.Errorf("prerender: negative option (tabs %d, timeout %s, recycle_after %d, reservation %d%%)",
			opts.Tabs, opts.Timeout, opts.RecycleAfter, opts.OnlineReservationPercent)
	}
	if opts.Tabs == 0 {
		opts.Tabs = 4
	}
	if opts.Timeout == 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.RecycleAfter == 0 {
		opts.RecycleAfter = 1000
	}
	if opts.OnlineReservationPercent > 100 {
		opts.OnlineReservationPercent = 100
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 5 * time.Second
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 20 << 20
	}
	if opts.MaxPageBytes <= 0 {
		opts.MaxPageBytes = 64 << 20
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = 32 << 20
	}
	opts.MaxInflightBytes = max(opts.MaxInflightBytes, opts.MaxBodyBytes)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Origin == nil {
		opts.Origin = func(string) (*url.URL, bool) { return nil, false }
	}
	if opts.BlockResourceTypes == nil {
		opts.BlockResourceTypes = []string{"Image", "Media", "Font"}
	}
	if opts.BlockHosts == nil {
		opts.BlockHosts = defaultBlockHosts
	}
	if opts.KeepScriptTypes == nil {
		opts.KeepScriptTypes = []string{"application/ld+json"}
	}
	r := &Renderer{
		opts:       opts,
		log:        opts.Logger,
		blockTypes: map[string]bool{},
		recycle:    make(chan struct{}, 1),
		inflight:   semaphore.NewWeighted(opts.MaxInflightBytes),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for _, t := range opts.BlockResourceTypes {
		r.blockTypes[strings.ToLower(t)] = true
	}
	for _, h := range opts.BlockHosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h != "" {
			r.blockHosts = append(r.blockHosts, h)
		}
	}
	for _, t := range opts.KeepScriptTypes {
		r.keepTypes = append(r.keepTypes, strings.ToLower(strings.TrimSpace(t)))
	}
	r.originRT = opts.Transport
	if r.originRT == nil {
		r.originRT = site.NewOriginTransport(0) // a render's context bounds it
	}
	for _, w := range opts.WarmSites {
		u, err := url.Parse(w)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return nil, fmt.Errorf("prerender: warm site %q: want an http or https base URL", w)
		}
		host := strings.ToLower(u.Host)
		if u.Port() == map[string]string{"http": "80", "https": "443"}[u.Scheme] {
			host = strings.ToLower(u.Hostname()) // as the browser writes it
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
		}
		r.warmURLs = append(r.warmURLs, u.Scheme+"://"+host+warmPath)
	}
	if opts.WarmPath != "" {
		u, err := url.Parse(opts.WarmPath)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(opts.WarmPath, "//") {
			return nil, fmt.Errorf("prerender: warm path %q: want a path that starts with /", opts.WarmPath)
		}
		if len(r.warmURLs) == 0 {
			return nil, fmt.Errorf("prerender: warm path %q without warm sites", opts.WarmPath)
		}
		for _, w := range r.warmURLs {
			r.warmPages = append(r.warmPages, strings.TrimSuffix(w, warmPath)+opts.WarmPath)
		}
	}
	if len(r.warmURLs) == 0 {
		r.warmURLs = []string{warmURL}
	}
	r.publicRT = newPublicTransport()
	r.metrics = newRendererMetrics(opts.Metrics, r)
	return r, nil
}

// FindChrome returns the browser binary PRISM launches for path (empty:
// the usual Debian and Chrome locations, then PATH), or an error that says
// how to install one.
func FindChrome(path string) (string, error) {
	const hint = "install one with `apt-get install chromium` or set render.chrome_path"
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("prerender: browser %q not found (%w); %s", path, err, hint)
		}
		return p, nil
	}
	for _, c := range chromeCandidates {
		if strings.HasPrefix(c, "/") {
			if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return c, nil
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("prerender: no Chromium or Chrome found (tried %s); %s",
		strings.Join(chromeCandidates, ", "), hint)
}

// Render renders req. It fails fast with ErrUnavailable while the browser is
// down and with ErrNoCapacity when the class has no tab and ctx ends.
func (r *Renderer) Render(ctx context.Context, req Request) (*Result, error) {
	start := r.opts.Now()
	res, oc, err := r.render(ctx, req)
	d := r.opts.Now().Sub(start)
	if res != nil {
		res.Duration = d
	}
	r.renders.Add(1)
	if err != nil {
		r.failures.Add(1)
	}
	r.metrics.observe(oc, d, res)
	return res, err
}

func (r *Renderer) render(ctx context.Context, req Request) (*Result, outcome, error) {
	pub, err := parsePublicURL(req.URL)
	if err != nil {
		return nil, outcomeBadRequest, err
	}
	for {
		inst := r.cur.Load()
		if inst == nil {
			return nil, outcomeUnavailable, fmt.Errorf("render %s: %w", pub, ErrUnavailable)
		}
		r.waiting.Add(1)
		s, err := inst.pool.acquire(ctx, req.Class)
		r.waiting.Add(-1)
		if errors.Is(err, errRetired) {
			continue // the browser is being recycled: use the new one
		}
		if errors.Is(err, ErrNoCapacity) {
			return nil, outcomeNoCapacity, fmt.Errorf("render %s: %w", pub, err)
		}
		if err != nil {
			return nil, outcomeUnavailable, fmt.Errorf("render %s: %w", pub, err)
		}
		r.active.Add(1)
		res, oc, err := inst.renderOn(ctx, s, pub, req) // releases s
		r.active.Add(-1)
		if n := inst.renders.Add(1); n >= int64(r.opts.RecycleAfter) {
			select {
			case r.recycle <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return res, oc, fmt.Errorf("render %s: %w", pub, err)
		}
		return res, oc, nil
	}
}

func parsePublicURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: url %q: %w", ErrBadRequest, raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: url %q is not an absolute http(s) URL", ErrBadRequest, raw)
	}
	// A fragment stays only as a hashbang (#!/x, the AJAX crawling
	// scheme's state, which a page's router reads); others never reach a
	// server and name no other page.
	if !strings.HasPrefix(u.Fragment, "!") {
		u.Fragment, u.RawFragment = "", ""
	}
	return u, nil
}

// Healthy returns nil when the browser is up and answering.
func (r *Renderer) Healthy() error {
	if r.cur.Load() == nil {
		return ErrUnavailable
	}
	if p := r.probeErr.Load(); p != nil && *p != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, *p)
	}
	return nil
}

// Capacity returns a snapshot of the tab pool.
func (r *Renderer) Capacity() Capacity {
	c := Capacity{Tabs: r.opts.Tabs, ReservationPercent: float64(r.opts.OnlineReservationPercent)}
	if inst := r.cur.Load(); inst != nil {
		c.Free = inst.pool.free()
	}
	c.ReservedForOnline, c.AvailableForRecache = reservation(c.Free, r.opts.OnlineReservationPercent)
	return c
}

// Stats returns a snapshot of render counters.
func (r *Renderer) Stats() Stats {
	return Stats{
		Renders:   r.renders.Load(),
		Failures:  r.failures.Load(),
		Active:    int(r.active.Load()),
		Waiting:   int(r.waiting.Load()),
		Crashes:   r.crashes.Load(),
		Restarts:  r.restarts.Load(),
		BrowserUp: r.Healthy() == nil,
	}
}

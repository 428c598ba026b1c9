package main

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/config"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/service"
	"github.com/prismproxy/prism/site"
)

// serviceDeps are what the render-service port shares with the proxy.
type serviceDeps struct {
	sites    *site.Table
	store    *cachestore.Store
	pipe     *fill.Pipeline
	sched    *recache.Scheduler
	node     *cluster.Node // nil: a single node
	renderer *prerender.Renderer
	originRT http.RoundTripper
	logger   *slog.Logger
	metrics  *metricdoc.Set
}

// newServiceServer builds the [service] port (prerender, Rendertron and
// EdgeComet protocols) over the proxy's cache, pipeline and scheduler. Its
// connection limits are the public port's: a client may wait for a render.
func newServiceServer(cfg *config.Config, d serviceDeps) (*namedServer, error) {
	opts := service.Options{
		Sites:            d.sites,
		Store:            d.store,
		Fill:             d.pipe,
		Tokens:           cfg.Service.Tokens,
		AllowFrom:        cfg.Service.AllowPrefixes(),
		DefaultDimension: cfg.Service.DefaultDimension,
		Offer:            d.sched.Offer,
		Served:           d.sched.Served,
		Track:            d.sched.Track,
		Forget:           d.sched.Forget,
		Health:           d.renderer.Healthy,
		MaxRenders:       cfg.Render.MaxPendingRenders, // 0: the service's default
		RenderWait:       cfg.Render.Timeout.Duration + 5*time.Second,
		WriteTimeout:     cfg.Server.WriteTimeout.Duration,
		Transport:        d.originRT,
		Logger:           d.logger.With("component", "service"),
		Metrics:          d.metrics,
	}
	if opts.MaxRenders == 0 {
		opts.MaxRenders = 16 * cfg.Render.Tabs
	}
	if d.node != nil {
		opts.Cluster = d.node
	}
	h, err := service.New(opts)
	if err != nil {
		return nil, err
	}
	return &namedServer{name: "service", addr: cfg.Service.Address, srv: publicServer(cfg, h, d.logger)}, nil
}

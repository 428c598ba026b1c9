// Command prism is a prerendering reverse proxy: crawlers get pages rendered
// by headless Chromium from a two-tier cache, people pass through to the
// origin. `prism -config FILE` (or `prism serve`) serves; `prism check`
// validates a configuration, `prism version` prints the build; `prism purge`
// and `prism warmup` talk to a running instance's admin API (for CI jobs).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/prismproxy/prism/adminapi"
	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/config"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/internalapi"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/proxy"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

func main() {
	c := &command{
		stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		serve: func(cfgPath string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfgPath, os.Stderr)
		},
		buildInfo: func() *debug.BuildInfo {
			bi, _ := debug.ReadBuildInfo()
			return bi
		},
	}
	os.Exit(c.run(os.Args[1:]))
}

// serve runs PRISM until ctx is done, then drains and stops every component.
func serve(ctx context.Context, cfgPath string, logOut io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.Log, logOut)
	for _, w := range cfg.Warnings() {
		logger.Warn(w)
	}
	start := time.Now()
	set := metricdoc.NewSet() // every family with its help text; see internal/metricdoc

	sites, err := site.New(cfg.SiteOptions())
	if err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	fillOpts := fill.Options{
		Sites:       sites,
		TTL:         cfg.Cache.TTL.Duration,
		StaleTTL:    cfg.Cache.StaleTTL.Duration,
		NotFoundTTL: cfg.Cache.NotFoundTTL.Duration,
		Logger:      logger.With("component", "fill"),
		Metrics:     set,
	}
	store, err := cachestore.New(cachestore.Options{
		Dir:          cfg.Cache.Dir,
		MemoryBytes:  int64(cfg.Cache.MemoryMB) << 20,
		MaxAge:       fillOpts.MaxAge(),
		MaxDiskBytes: int64(cfg.Cache.DiskMaxMB) << 20,
		Logger:       logger.With("component", "cache"),
		Metrics:      set,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	// One transport reaches the origins, for people, crawler fallbacks and
	// the browser's requests. Its header wait lets an origin's 504 go out
	// before the public port's write timeout cuts the connection.
	originRT := site.NewOriginTransport(site.OriginHeaderTimeout(cfg.Server.WriteTimeout.Duration))
	renderer, err := prerender.New(prerender.Options{
		Transport:                originRT,
		ChromePath:               cfg.Render.ChromePath,
		Tabs:                     cfg.Render.Tabs,
		Timeout:                  cfg.Render.Timeout.Duration,
		OnlineReservationPercent: cfg.Render.OnlineReservationPercent,
		RecycleAfter:             cfg.Render.RecycleAfter,
		RecycleMemoryMB:          cfg.Render.RecycleMemoryMB,
		MaxBodyBytes:             int64(cfg.Render.MaxResponseMB) << 20,
		MaxPageBytes:             int64(cfg.Render.MaxPageMB) << 20,
		MaxInflightBytes:         int64(cfg.Render.MaxInflightMB) << 20,
		AlwaysVisible:            cfg.Render.AlwaysVisible,
		NoBrowserCache:           !cfg.Render.BrowserCache,
		Origin:                   sites.Origin,
		WarmSites:                warmSites(sites),
		WarmPath:                 cfg.Render.WarmUpPath,
		BlockResourceTypes:       cfg.Render.BlockResourceTypes,
		BlockHosts:               cfg.Render.BlockHosts,
		KeepScriptTypes:          cfg.Render.KeepScriptTypes,
		UserDataDir:              cfg.Render.UserDataDir,
		Logger:                   logger.With("component", "render"),
		Metrics:                  set,
	})
	if err != nil {
		return err
	}

	// One cache-fill pipeline serves crawler misses (proxy), recache
	// workers (sched), /render and warmup (admin); each of them tells the
	// scheduler what it stored.
	var node *cluster.Node // nil: a single node
	var sched *recache.Scheduler
	if cfg.Cluster.Enabled() {
		var hostIDs []int
		for _, h := range sites.Hosts() {
			hostIDs = append(hostIDs, h.ID)
		}
		redis.SetLogger(cluster.ClientLogger(logger.With("component", "cluster")))
		node, err = cluster.New(cluster.Options{
			URL:         cfg.Cluster.Redis,
			NodeID:      cfg.Cluster.NodeID,
			KeyPrefix:   cfg.Cluster.KeyPrefix,
			CallTimeout: cfg.Cluster.CallTimeout.Duration,
			LockLease:   cfg.Cluster.LockLease.Duration,
			PurgeWait:   cfg.Cluster.PurgeWait.Duration,
			ClaimLease:  cfg.Cluster.ClaimLease.Duration,
			// Read at each heartbeat, once sched is built.
			Stats: func() cluster.NodeStats {
				return cluster.NewNodeStats(sched.Status(), renderer.Capacity())
			},
			Store:         store,
			HostIDs:       hostIDs,
			MaxAge:        fillOpts.MaxAge(),
			MaxEntryBytes: int64(cfg.Render.MaxPageMB) << 20,
			StateDir:      cfg.Cache.Dir,
			Logger:        logger.With("component", "cluster"),
			Metrics:       set,
		})
		if err != nil {
			return err
		}
		defer node.Close()
		// Before serving: refuse a node id in use, and drop what was
		// purged while this node was away.
		if err := node.Join(ctx); err != nil {
			return err
		}
		for _, w := range node.CheckRedis(ctx) {
			logger.Warn(w)
		}
		fillOpts.Cluster = node
	}
	fillOpts.Store, fillOpts.Render = store, renderer.Render
	pipe, err := fill.New(fillOpts)
	if err != nil {
		return err
	}
	schedOpts := recache.Options{
		Sites:    sites,
		Refresh:  pipe.Refresh,
		Capacity: func() int { return renderer.Capacity().AvailableForRecache },
		Store:    store,
		// Autorecache what crawlers ask for, not every URL ever rendered.
		ServedOnly:  true,
		Interval:    cfg.Recache.Interval.Duration,
		Tick:        cfg.Recache.Tick.Duration,
		QueueSize:   cfg.Recache.QueueSize,
		Workers:     cfg.Recache.Workers, // config's default: render.tabs
		MaxAttempts: cfg.Recache.MaxAttempts,
		JournalDir:  cfg.Recache.JournalDir,
		Logger:      logger.With("component", "recache"),
		Metrics:     set,
	}
	if node != nil {
		schedOpts.Shared = node
	}
	sched, err = recache.New(schedOpts)
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Options{
		Sites: sites,
		Store: store,
		Fill:  pipe,
		// A stale hit offers an autorecache due now: it never waits for the
		// scheduler's lock or disk, and the next stale hit asks again if an
		// offer is dropped.
		Offer:          sched.Offer,
		Served:         sched.Served,
		Track:          sched.Track,
		TrustedProxies: cfg.Server.TrustedPrefixes(),
		MaxRenders:     cfg.Render.MaxPendingRenders,
		Tabs:           cfg.Render.Tabs,
		RenderTimeout:  cfg.Render.Timeout.Duration,
		Transport:      originRT,
		Logger:         logger.With("component", "proxy"),
		Metrics:        set,
	})
	if err != nil {
		return err
	}
	adminOpts := adminapi.Options{
		Token:      cfg.Admin.BearerToken,
		Sites:      sites,
		Store:      store,
		Refresh:    pipe.Refresh,
		Track:      sched.Track,
		Warm:       sched.Warm,
		Health:     renderer.Healthy,
		Renders:    renderer.Stats,
		Pool:       renderer.Capacity,
		QueueDepth: func() int { return sched.Status().InternalQueue },
		Metrics:    set,
		Start:      start,
		Logger:     logger.With("component", "admin"),
	}
	if node != nil {
		adminOpts.Cluster = node
	}
	adminOpts.Warmup = adminapi.WarmupOptions{
		Concurrency: cfg.Warmup.Concurrency,
		Rate:        cfg.Warmup.Rate,
		MaxURLs:     cfg.Warmup.MaxURLs,
	}
	admin, err := adminapi.New(adminOpts)
	if err != nil {
		return err
	}

	servers := []*namedServer{
		{name: "public", addr: cfg.Server.Listen, srv: publicServer(cfg, px, logger)},
		{name: "admin", addr: cfg.Admin.Address, srv: sideServer(admin, logger)},
	}
	if cfg.InternalEnabled() {
		internalOpts := internalapi.Options{
			Sites:            sites,
			Scheduler:        sched,
			Store:            store,
			Capacity:         renderer.Capacity,
			AuthKey:          cfg.Internal.AuthKey,
			SchedulerControl: cfg.Internal.SchedulerControlAPI,
			DaemonID:         cfg.Internal.DaemonID,
			Start:            start,
			Logger:           logger.With("component", "internal"),
		}
		if node != nil {
			internalOpts.Cluster = node
		}
		internal, err := internalapi.New(internalOpts)
		if err != nil {
			return err
		}
		servers = append(servers, &namedServer{name: "internal", addr: cfg.Internal.Address, srv: sideServer(internal, logger)})
	}
	if cfg.Service.Enabled() {
		svc, err := newServiceServer(cfg, serviceDeps{sites: sites, store: store, pipe: pipe, sched: sched, node: node,
			renderer: renderer, originRT: originRT, logger: logger, metrics: set})
		if err != nil {
			return err
		}
		servers = append(servers, svc)
		logger.Info("render-service port enabled", "address", cfg.Service.Address, "tokens", len(cfg.Service.Tokens))
	}
	// Listen before anything runs, so a taken port is a start-up error.
	for _, s := range servers {
		if s.ln, err = net.Listen("tcp", s.addr); err != nil {
			closeListeners(servers)
			return fmt.Errorf("%s port: %w", s.name, err)
		}
	}

	// Components run until every server has drained; servers until ctx ends.
	compCtx, stopComponents := context.WithCancel(context.Background())
	defer stopComponents()
	components, compCtx := errgroup.WithContext(compCtx)
	components.Go(func() error { return store.Run(compCtx) })
	components.Go(func() error { return renderer.Run(compCtx) })
	components.Go(func() error { return sched.Run(compCtx) })
	components.Go(func() error { return admin.Run(compCtx) })
	if node != nil {
		components.Go(func() error { return node.Run(compCtx) })
	}

	serving, serveCtx := errgroup.WithContext(ctx)
	for _, s := range servers {
		serving.Go(func() error {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s port: %w", s.name, err)
			}
			return nil
		})
	}
	logger.Info("prism started", "public", cfg.Server.Listen, "admin", cfg.Admin.Address,
		"internal", internalAddr(cfg), "hosts", len(cfg.Hosts), "tabs", cfg.Render.Tabs)

	// Wait for a signal, a server failure or a component failure.
	select {
	case <-serveCtx.Done():
	case <-compCtx.Done():
	}
	logger.Info("prism draining")
	admin.Drain()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(shutdownCtx); err != nil {
			logger.Warn("shutdown incomplete", "server", s.name, "err", err)
			_ = s.srv.Close()
		}
	}
	serveErr := serving.Wait()
	stopComponents()
	compErr := components.Wait()
	if err := sched.Close(); err != nil {
		logger.Warn("recache journal close", "err", err)
	}
	logger.Info("prism stopped")
	return errors.Join(serveErr, compErr)
}

// namedServer is one of PRISM's three ports.
type namedServer struct {
	name string
	addr string
	srv  *http.Server
	ln   net.Listener
}

func closeListeners(servers []*namedServer) {
	for _, s := range servers {
		if s.ln != nil {
			s.ln.Close()
		}
	}
}

func internalAddr(cfg *config.Config) string {
	if !cfg.InternalEnabled() {
		return "disabled"
	}
	return cfg.Internal.Address
}

// publicServer wraps the proxy with the slow-client and header limits.
func publicServer(cfg *config.Config, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

// sideServer serves the admin or internal API.
func sideServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      5 * time.Minute, // a forced render can take render.timeout and more
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

func newLogger(c config.Log, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// warmSites is every host's public base URL, for the renderer's warm-up.
func warmSites(sites *site.Table) []string {
	var out []string
	for _, h := range sites.Hosts() {
		out = append(out, h.PublicURL("/"))
	}
	return out
}

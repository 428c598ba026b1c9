package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prismproxy/prism/site"
)

// validator collects problems with their lines.
type validator struct {
	lines map[string]int
	probs []*Problem
}

func (v *validator) add(key, format string, args ...any) {
	v.probs = append(v.probs, &Problem{Key: key, Line: lineOf(v.lines, key), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(key, "must be between %d and %d, got %d", lo, hi, n)
	}
}

func (v *validator) durRange(key string, d Duration, lo, hi time.Duration) {
	if d.Duration < lo || d.Duration > hi {
		v.add(key, "must be between %s and %s, got %s", lo, hi, d.Duration)
	}
}

func (v *validator) address(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "%q is not a host:port address (e.g. \"127.0.0.1:4001\" or \":4000\")", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add(key, "%q has an invalid port", addr)
	}
	if host != "" && strings.ContainsAny(host, "/ @?#") {
		v.add(key, "%q has an invalid host", addr)
	}
}

func (v *validator) nonEmptyEntries(key string, list []string) {
	for i, s := range list {
		if strings.TrimSpace(s) == "" {
			v.add(fmt.Sprintf("%s[%d]", key, i), "must not be empty")
		}
	}
}

// Validate checks the whole configuration and returns every problem at once
// (errors.Join of *Problem), one per line, each with its key path and, for a
// parsed file, its line. It returns nil for a valid configuration.
func (c *Config) Validate() error {
	v := &validator{lines: c.lines}

	// server
	v.address("server.listen", c.Server.Listen)
	for i, p := range c.Server.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			v.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}
	v.durRange("server.read_header_timeout", c.Server.ReadHeaderTimeout, time.Second, 10*time.Minute)
	v.durRange("server.read_timeout", c.Server.ReadTimeout, time.Second, time.Hour)
	v.durRange("server.write_timeout", c.Server.WriteTimeout, time.Second, time.Hour)
	// A crawler may wait render.timeout + 5s for a render, then for the
	// origin's page: leave it at least 10s more than render.timeout.
	if c.Server.WriteTimeout.Duration > 0 && c.Server.WriteTimeout.Duration < c.Render.Timeout.Duration+10*time.Second {
		v.add("server.write_timeout", "must be at least render.timeout + 10s (%s), or crawlers waiting for a render are cut off", c.Render.Timeout.Duration+10*time.Second)
	}
	v.durRange("server.idle_timeout", c.Server.IdleTimeout, time.Second, time.Hour)
	v.intRange("server.max_header_bytes", c.Server.MaxHeaderBytes, 1<<10, 16<<20)
	v.durRange("server.shutdown_timeout", c.Server.ShutdownTimeout, 100*time.Millisecond, 5*time.Minute)

	// log
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		v.add("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.add("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}

	// admin
	v.address("admin.address", c.Admin.Address)
	if c.Admin.BearerToken == "" && c.Admin.Address != "" && !isLoopbackAddress(c.Admin.Address) {
		v.add("admin.address", "%q is not a loopback address and admin.bearer_token is empty: set admin.bearer_token (or %s), or listen on 127.0.0.1",
			c.Admin.Address, EnvAdminToken)
	}

	// internal
	if c.Internal.Address != "" {
		v.address("internal.address", c.Internal.Address)
	}
	if strings.TrimSpace(c.Internal.DaemonID) == "" {
		v.add("internal.daemon_id", "must not be empty")
	}

	c.validateRender(v)

	// cache
	if strings.TrimSpace(c.Cache.Dir) == "" {
		v.add("cache.dir", "must not be empty")
	}
	if c.Cache.MemoryMB < 1 || c.Cache.MemoryMB > 1<<20 {
		v.add("cache.memory_mb", "must be between 1 and %d, got %d", 1<<20, c.Cache.MemoryMB)
	}
	v.intRange("cache.disk_max_mb", c.Cache.DiskMaxMB, 0, 1<<30) // 0: no bound; 1 PiB at most
	if c.Cache.TTL.Duration <= 0 {
		v.add("cache.ttl", "must be positive, got %s", c.Cache.TTL.Duration)
	}
	if c.Cache.StaleTTL.Duration < 0 {
		v.add("cache.stale_ttl", "must not be negative, got %s", c.Cache.StaleTTL.Duration)
	}
	if c.Cache.NotFoundTTL.Duration <= 0 {
		v.add("cache.not_found_ttl", "must be positive, got %s", c.Cache.NotFoundTTL.Duration)
	}

	// recache
	if c.Recache.Interval.Duration < time.Minute {
		v.add("recache.interval", "must be at least 1m, got %s", c.Recache.Interval.Duration)
	}
	v.durRange("recache.tick", c.Recache.Tick, 10*time.Millisecond, time.Minute)
	v.intRange("recache.queue_size", c.Recache.QueueSize, 1, 1_000_000)
	v.intRange("recache.workers", c.Recache.Workers, 0, 256)
	v.intRange("recache.max_attempts", c.Recache.MaxAttempts, 1, 100)
	if strings.TrimSpace(c.Recache.JournalDir) == "" {
		v.add("recache.journal_dir", "must not be empty")
	}

	// cluster
	if cl := c.Cluster; cl.Enabled() {
		if u, err := url.Parse(cl.Redis); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			v.add("cluster.redis", "must be a redis:// or rediss:// URL with a host, e.g. \"redis://127.0.0.1:6379/0\"")
		}
		if strings.TrimSpace(cl.NodeID) == "" || strings.ContainsAny(cl.NodeID, " \t\r\n:") {
			v.add("cluster.node_id", "must be a non-empty name without spaces or colons, got %q", cl.NodeID)
		}
		if cl.KeyPrefix == "" || strings.ContainsAny(cl.KeyPrefix, " \t\r\n") {
			v.add("cluster.key_prefix", "must be non-empty and without spaces, got %q", cl.KeyPrefix)
		}
		v.durRange("cluster.call_timeout", cl.CallTimeout, 10*time.Millisecond, 10*time.Second)
		v.durRange("cluster.lock_lease", cl.LockLease, time.Second, 5*time.Minute)
		v.durRange("cluster.purge_wait", cl.PurgeWait, 0, time.Minute)
		v.durRange("cluster.claim_lease", cl.ClaimLease, 2*time.Second, 10*time.Minute)
	}

	c.validateService(v)
	c.validateWarmup(v)
	c.validateHosts(v)
	return joinProblems(v.probs)
}

func (c *Config) validateWarmup(v *validator) {
	w := &c.Warmup
	// concurrency 0: no bound of its own.
	v.intRange("warmup.concurrency", w.Concurrency, 0, 1024)
	if !(w.Rate >= 0 && w.Rate <= 100_000) { // NaN fails both
		v.add("warmup.rate", "must be between 0 (no limit) and 100000 URLs per second, got %v", w.Rate)
	}
	v.intRange("warmup.max_urls", w.MaxURLs, 1, 10_000_000)
}

func (c *Config) validateRender(v *validator) {
	r := &c.Render
	v.intRange("render.tabs", r.Tabs, 1, 64)
	v.durRange("render.timeout", r.Timeout, time.Second, 5*time.Minute)
	v.intRange("render.online_reservation_percent", r.OnlineReservationPercent, 0, 100)
	v.intRange("render.recycle_after", r.RecycleAfter, 1, 1_000_000)
	v.intRange("render.recycle_memory_mb", r.RecycleMemoryMB, 0, 1<<20)
	v.intRange("render.max_pending_renders", r.MaxPendingRenders, 0, 100_000)
	v.intRange("render.max_response_mb", r.MaxResponseMB, 1, 1024)
	v.intRange("render.max_page_mb", r.MaxPageMB, 1, 16384)
	v.intRange("render.max_inflight_mb", r.MaxInflightMB, 1, 16384)
	if r.MaxInflightMB < r.MaxResponseMB {
		v.add("render.max_inflight_mb", "%d is below render.max_response_mb (%d): a response that size could never be held", r.MaxInflightMB, r.MaxResponseMB)
	}
	for i, t := range r.BlockResourceTypes {
		key := fmt.Sprintf("render.block_resource_types[%d]", i)
		ct, ok := cdpResourceType(t)
		switch {
		case !ok:
			v.add(key, "unknown resource type %q (want e.g. Image, Media, Font, Stylesheet)", t)
		case ct == "Document":
			v.add(key, "blocking Document would block every page")
		}
	}
	for i, h := range r.BlockHosts {
		if err := site.CheckHostName(h, false); err != nil {
			v.add(fmt.Sprintf("render.block_hosts[%d]", i), "%q %v", h, err)
		}
	}
	v.nonEmptyEntries("render.keep_script_types", r.KeepScriptTypes)
	if p := r.WarmUpPath; p != "" {
		u, err := url.Parse(p)
		switch {
		case len(p) > 2048:
			v.add("render.warm_up_path", "longer than 2048 bytes")
		case err != nil || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || u.Host != "" || strings.ContainsAny(p, " \t\r\n#"):
			v.add("render.warm_up_path", "%q is not a path that starts with / (e.g. \"/\"); empty turns the warm-up render off", p)
		}
	}
}

// validateHosts reports the hosts' problems, and those of the URL options
// site uses, through site.Check: the one validator of hosts, dimensions and
// matchers.
func (c *Config) validateHosts(v *validator) {
	if len(c.Hosts) == 0 {
		v.add("hosts", "at least one [[hosts]] entry is required")
	}
	opts, reported := c.siteOptions(v)
	for _, p := range site.Check(opts) {
		key := p.Field
		if !strings.HasPrefix(key, "hosts") {
			key = "cache." + key // strip_params, static_extensions
		}
		if !reported[key] {
			v.add(key, "%s", p.Msg)
		}
	}
}

// SiteOptions maps the [[hosts]] tables and the cache's URL options onto
// site.Options. Call it on a validated Config.
func (c *Config) SiteOptions() site.Options {
	opts, _ := c.siteOptions(nil)
	return opts
}

// siteOptions builds site.Options; an origin that does not parse is left
// nil and, with v, reported (the returned keys).
func (c *Config) siteOptions(v *validator) (site.Options, map[string]bool) {
	reported := map[string]bool{}
	opts := site.Options{
		StripParams:      c.Cache.StripParams,
		StaticExtensions: c.Cache.StaticExtensions,
	}
	for i, h := range c.Hosts {
		host := site.Host{
			ID:              h.ID,
			Name:            h.Name,
			Aliases:         h.Aliases,
			Scheme:          h.Scheme,
			RecacheInterval: h.RecacheInterval.Duration,
		}
		if h.Origin != "" {
			origin, err := url.Parse(h.Origin)
			if err != nil && v != nil {
				key := fmt.Sprintf("hosts[%d].origin", i)
				v.add(key, "%q is not a URL", h.Origin)
				reported[key] = true
			}
			host.Origin = origin
		}
		for _, d := range h.Dimensions {
			host.Dimensions = append(host.Dimensions, site.Dimension{
				ID: d.ID, Name: d.Name, MatchUA: d.MatchUA,
				Width: d.Width, Height: d.Height, Mobile: d.Mobile, RenderUA: d.RenderUA,
			})
		}
		opts.Hosts = append(opts.Hosts, host)
	}
	return opts, reported
}

// cdpResourceType returns the CDP spelling of a resource type
// (Network.ResourceType), matched case-insensitively.
func cdpResourceType(s string) (string, bool) {
	for _, t := range []string{
		"Document", "Stylesheet", "Image", "Media", "Font", "Script", "TextTrack",
		"XHR", "Fetch", "Prefetch", "EventSource", "WebSocket", "Manifest",
		"SignedExchange", "Ping", "CSPViolationReport", "Preflight", "FedCM", "Other",
	} {
		if strings.EqualFold(s, t) {
			return t, true
		}
	}
	return "", false
}

// Package config reads PRISM's TOML configuration: it decodes strictly
// (unknown keys are errors that name the key and its line), fills in
// defaults, takes secrets from the environment and validates everything at
// once. Only main imports it; main maps each section onto the Options of the
// package that needs it.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"
)

// Environment variables that override secrets from the file.
const (
	EnvAdminToken      = "PRISM_ADMIN_TOKEN"
	EnvInternalAuthKey = "PRISM_INTERNAL_AUTH_KEY"
	EnvRedisURL        = "PRISM_REDIS_URL"
)

// Config is PRISM's whole configuration. The zero value is not useful: get
// one from Load or Parse. A Config is not safe for concurrent mutation; it is
// read-only once loaded.
type Config struct {
	Server   Server   `toml:"server"`
	Log      Log      `toml:"log"`
	Admin    Admin    `toml:"admin"`
	Internal Internal `toml:"internal"`
	Render   Render   `toml:"render"`
	Cache    Cache    `toml:"cache"`
	Recache  Recache  `toml:"recache"`
	Cluster  Cluster  `toml:"cluster"`
	Service  Service  `toml:"service"`
	Warmup   Warmup   `toml:"warmup"`
	Hosts    []Host   `toml:"hosts"`

	// lines maps key paths ("render.tabs", "hosts[0].dimensions[1].id") to
	// the line that sets them, so Validate can point at the file.
	lines map[string]int
}

// Cluster makes several nodes share one cache through Redis. Without
// Redis the node runs alone and no Redis code runs.
type Cluster struct {
	// Redis is "redis://[:password@]host:port[/db]" or "rediss://..."; empty:
	// a single node. PRISM_REDIS_URL overrides it (keeps a password out of
	// the file).
	Redis       string   `toml:"redis"`
	NodeID      string   `toml:"node_id"`      // default: the host name
	KeyPrefix   string   `toml:"key_prefix"`   // default "prism:"
	CallTimeout Duration `toml:"call_timeout"` // default 250ms: bounds each Redis call on a request's path
	LockLease   Duration `toml:"lock_lease"`   // default 5s: a dead render holder's page renders again after it
	PurgeWait   Duration `toml:"purge_wait"`   // default 2s: how long a purge waits for every node to apply it
	ClaimLease  Duration `toml:"claim_lease"`  // default 15s: a dead node's claimed recaches return to the queue after it
}

// Enabled reports whether cluster mode is on.
func (c Cluster) Enabled() bool { return c.Redis != "" }

// Server is the public proxy port.
type Server struct {
	Listen string `toml:"listen"` // default ":4000"
	// TrustedProxies are CIDRs or single IPs of proxies allowed to set
	// X-Forwarded-Host/-For/-Proto. Default: none.
	TrustedProxies    []string `toml:"trusted_proxies"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"` // default 10s
	ReadTimeout       Duration `toml:"read_timeout"`        // default 30s
	// WriteTimeout must exceed render.timeout: a crawler may wait for a render.
	WriteTimeout   Duration `toml:"write_timeout"`    // default 60s
	IdleTimeout    Duration `toml:"idle_timeout"`     // default 120s
	MaxHeaderBytes int      `toml:"max_header_bytes"` // default 65536
	// ShutdownTimeout bounds draining on SIGTERM; the default 6s (plus up to 2s to close the browser) keeps the
	// whole exit within 10s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// Log configures log/slog.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// Admin is the admin API port.
type Admin struct {
	Address string `toml:"address"` // default "127.0.0.1:4001"
	// BearerToken guards every endpoint but /health; PRISM_ADMIN_TOKEN
	// overrides it. Empty is allowed only on a loopback address.
	BearerToken string `toml:"bearer_token"`
}

// Internal is the internal API port (recache queues, invalidation).
type Internal struct {
	// Address is where the port listens; empty disables it. Default
	// "127.0.0.1:10090".
	Address string `toml:"address"`
	// AuthKey is the X-Internal-Auth value; PRISM_INTERNAL_AUTH_KEY
	// overrides it. Empty: the internal port is not started (see
	// InternalEnabled and Warnings).
	AuthKey             string `toml:"auth_key"`
	SchedulerControlAPI bool   `toml:"scheduler_control_api"` // pause/resume allowed
	DaemonID            string `toml:"daemon_id"`             // default "prism-01"
}

// DefaultTabs is render.tabs when the config does not set it: two tabs per
// core, from 2 to 16. Measured on a 2-core machine (bench/README.md), renders
// per second rise up to 3-4 tabs and stay flat beyond (6 and 8 tabs render
// no more, and each render waits longer): a render waits on the network,
// timers and the browser's own process part of the time, which a second
// tab per core fills. Each tab costs about 60 MB of Chromium's memory
// (PSS) on top of about 310 MB for the browser.
func DefaultTabs(cores int) int {
	return min(max(2*cores, 2), 16)
}

// Render configures headless Chromium.
type Render struct {
	ChromePath  string   `toml:"chrome_path"`   // empty: search PATH and the usual places
	UserDataDir string   `toml:"user_data_dir"` // empty: a temp dir removed at exit
	Tabs        int      `toml:"tabs"`          // default DefaultTabs(cores), 1..64
	Timeout     Duration `toml:"timeout"`       // default 15s, 1s..5m
	// OnlineReservationPercent of the free tabs is kept from recache work.
	OnlineReservationPercent int `toml:"online_reservation_percent"` // default 50
	RecycleAfter             int `toml:"recycle_after"`              // default 1000 renders
	// RecycleMemoryMB restarts the browser when its processes' memory
	// (PSS: shared pages counted once) passes this many MiB; 0: no limit.
	// Default 2048.
	RecycleMemoryMB int `toml:"recycle_memory_mb"`
	// What one render may pull, in MiB (see README "Hostile pages"): one
	// response (default 20), all of a page's responses (default 64; past
	// it the render is served as partial), and the response bodies held
	// across the browser at once (default 32, at least max_response_mb).
	MaxResponseMB int `toml:"max_response_mb"`
	MaxPageMB     int `toml:"max_page_mb"`
	MaxInflightMB int `toml:"max_inflight_mb"`
	// MaxPendingRenders bounds the crawler renders in flight; a miss beyond
	// it gets the origin's own response. 0 (default): 16 x tabs.
	MaxPendingRenders int `toml:"max_pending_renders"`
	// BlockResourceTypes are CDP resource types never loaded, in CDP
	// spelling ("Image"); default Image, Media, Font. Empty: none.
	BlockResourceTypes []string `toml:"block_resource_types"`
	// BlockHosts are hosts (and subdomains) never loaded. Nil (key absent):
	// the renderer's built-in analytics list; empty: none.
	BlockHosts []string `toml:"block_hosts"`
	// KeepScriptTypes are script types kept in the output; default
	// application/ld+json. Empty: strip every script.
	KeepScriptTypes []string `toml:"keep_script_types"`
	// AlwaysVisible shows (lays out and paints) every page for its whole
	// render. Default false: a page renders hidden, at about half the
	// browser CPU, and is shown only once it uses an API that needs frames
	// (requestAnimationFrame, IntersectionObserver, visibility, ...).
	AlwaysVisible bool `toml:"always_visible"`
	// BrowserCache lets the browser keep responses across renders, each
	// used only after its origin answered 304 to the copy's ETag or
	// Last-Modified (see README "Fresh after a deploy"). Default true;
	// false: every render fetches every response whole, for origins whose
	// validators do not change with their content.
	BrowserCache bool `toml:"browser_cache"`
	// WarmUpPath is a page each tab renders, on every host in turn, when
	// the browser starts (and after every restart), before it serves a
	// render: the site's scripts have then run once in every tab, and the
	// first crawler's render costs what a later one does. Its requests
	// reach the origin as a render's do; nothing is cached. Default "/";
	// empty: tabs warm up on a page of PRISM's own only.
	WarmUpPath string `toml:"warm_up_path"`
}

// Cache configures the two-tier cache.
type Cache struct {
	Dir         string   `toml:"dir"`           // default "data/cache"
	MemoryMB    int      `toml:"memory_mb"`     // default 256
	TTL         Duration `toml:"ttl"`           // default 24h
	StaleTTL    Duration `toml:"stale_ttl"`     // default 72h; 0: never serve stale
	NotFoundTTL Duration `toml:"not_found_ttl"` // default 1h, for 404 and 410
	// DiskMaxMB bounds the disk tier's entry files, in MiB: past it the
	// entries rendered longest ago are evicted (from disk and memory) down
	// to 90% of it, in the background. 0 (default): no bound; entries
	// still age out after ttl + stale_ttl.
	DiskMaxMB int `toml:"disk_max_mb"`
	// StripParams are query parameters dropped from cache keys ("utm_*"
	// is a prefix). Nil (key absent): the built-in list; empty: none.
	StripParams []string `toml:"strip_params"`
	// StaticExtensions are never rendered (".css"). Nil (key absent): the
	// built-in list; empty: none.
	StaticExtensions []string `toml:"static_extensions"`
}

// Recache configures the recache scheduler.
type Recache struct {
	Interval    Duration `toml:"interval"`     // autorecache period; default 12h
	Tick        Duration `toml:"tick"`         // dispatch period; default 1s
	QueueSize   int      `toml:"queue_size"`   // internal queue bound; default 1000
	Workers     int      `toml:"workers"`      // default (and 0): render.tabs
	MaxAttempts int      `toml:"max_attempts"` // default 3
	JournalDir  string   `toml:"journal_dir"`  // default "data/recache"
}

// Warmup paces sitemap warmups (POST /warmup, prism warmup). Warmup
// renders also go through the recache scheduler: recache.workers and the
// tabs crawlers leave free bound them too.
type Warmup struct {
	// Concurrency is how many of a warmup's renders are queued and not
	// finished at once; 0 (default): no bound of its own, the scheduler's
	// (in a cluster, every node's free tabs).
	Concurrency int `toml:"concurrency"`
	// Rate is how many page URLs per second a warmup queues at most (all
	// of a URL's dimensions count once); 0 (default): no limit.
	Rate float64 `toml:"rate"`
	// MaxURLs caps one warmup's page URLs (after deduplication); a bigger
	// sitemap is truncated (logged, /warmup/status "truncated": true), not
	// refused. Default 50000.
	MaxURLs int `toml:"max_urls"`
}

// Host is one site PRISM fronts.
type Host struct {
	ID      int      `toml:"id"`
	Name    string   `toml:"name"`    // matched against the Host header
	Aliases []string `toml:"aliases"` // further names
	Origin  string   `toml:"origin"`  // absolute http(s) URL, no path
	Scheme  string   `toml:"scheme"`  // public scheme; default "https"
	// RecacheInterval overrides recache.interval for this host; 0: the default.
	RecacheInterval Duration    `toml:"recache_interval"`
	Dimensions      []Dimension `toml:"dimensions"`
}

// Dimension is one way of rendering a host's pages.
type Dimension struct {
	ID   int    `toml:"id"`
	Name string `toml:"name"`
	// MatchUA: plain strings are case-insensitive substrings, "re:EXPR" a
	// regular expression, "@crawlers", "@search", "@social", "@ai", "@seo" the
	// built-in crawler lists. The first matching dimension of a host wins.
	MatchUA  []string `toml:"match_ua"`
	Width    int      `toml:"width"`     // default 1366, or 412 when mobile
	Height   int      `toml:"height"`    // default 768, or 915 when mobile
	Mobile   bool     `toml:"mobile"`    // touch, mobile viewport
	RenderUA string   `toml:"render_ua"` // empty: a Chrome UA for the device class
}

// Duration is a time.Duration written as a Go duration string ("15s",
// "1h30m") in TOML. Bare integers are refused: 30 would mean 30ns.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"15s\", \"1h30m\")", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Default returns the configuration with every default filled in and no
// hosts.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:            ":4000",
			ReadHeaderTimeout: Duration{10 * time.Second},
			ReadTimeout:       Duration{30 * time.Second},
			WriteTimeout:      Duration{60 * time.Second},
			IdleTimeout:       Duration{120 * time.Second},
			MaxHeaderBytes:    64 << 10,
			ShutdownTimeout:   Duration{6 * time.Second},
		},
		Log:   Log{Level: "info", Format: "text"},
		Admin: Admin{Address: "127.0.0.1:4001"},
		Internal: Internal{
			Address:  "127.0.0.1:10090",
			DaemonID: "prism-01",
		},
		Render: Render{
			Tabs:                     DefaultTabs(runtime.NumCPU()),
			Timeout:                  Duration{15 * time.Second},
			OnlineReservationPercent: 50,
			RecycleAfter:             1000,
			RecycleMemoryMB:          2048,
			MaxResponseMB:            20,
			MaxPageMB:                64,
			MaxInflightMB:            32,
			BlockResourceTypes:       []string{"Image", "Media", "Font"},
			KeepScriptTypes:          []string{"application/ld+json"},
			WarmUpPath:               "/",
			BrowserCache:             true,
		},
		Cache: Cache{
			Dir:         "data/cache",
			MemoryMB:    256,
			TTL:         Duration{24 * time.Hour},
			StaleTTL:    Duration{72 * time.Hour},
			NotFoundTTL: Duration{time.Hour},
		},
		Recache: Recache{
			Interval:    Duration{12 * time.Hour},
			Tick:        Duration{time.Second},
			QueueSize:   1000,
			MaxAttempts: 3,
			JournalDir:  "data/recache",
		},
		Cluster: Cluster{
			NodeID:      defaultNodeID(),
			KeyPrefix:   "prism:",
			CallTimeout: Duration{250 * time.Millisecond},
			LockLease:   Duration{5 * time.Second},
			PurgeWait:   Duration{2 * time.Second},
			ClaimLease:  Duration{15 * time.Second},
		},
		Warmup: Warmup{MaxURLs: 50_000},
	}
}

func defaultNodeID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "prism"
	}
	return h
}

// Load reads the file at path, parses it, applies the environment
// (os.LookupEnv) and validates the result.
func Load(path string) (*Config, error) { return LoadWith(path, os.LookupEnv) }

// LoadWith is Load with the environment given by lookupEnv (nil: none).
// The error lists every problem found, one per line, each with its key path
// and line.
func LoadWith(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err == nil {
		c.ApplyEnv(lookupEnv)
		err = c.Validate()
	} else if rest, ok := withoutProblems(data, err); ok {
		// Decoding failed on some keys: validate the rest of the file too,
		// so that every problem is reported at once, not in two rounds.
		if c2, err2 := Parse(rest); err2 == nil {
			c2.ApplyEnv(lookupEnv)
			err = mergeProblems(err, c2.Validate())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// Parse decodes a TOML document strictly and fills in defaults. It does not
// read the environment or validate: call ApplyEnv and Validate (Load does
// both). Decoding problems (syntax, unknown keys, wrong types, bad
// durations) come back together, each with its key and line.
func Parse(data []byte) (*Config, error) {
	c := Default()
	if err := decode(data, c); err != nil {
		return nil, err
	}
	c.fill()
	return c, nil
}

// fill applies the defaults that depend on other values or sit inside
// arrays of tables.
func (c *Config) fill() {
	if c.Recache.Workers == 0 {
		c.Recache.Workers = c.Render.Tabs
	}
	for i := range c.Render.BlockResourceTypes {
		if t, ok := cdpResourceType(c.Render.BlockResourceTypes[i]); ok {
			c.Render.BlockResourceTypes[i] = t
		}
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.Scheme == "" {
			h.Scheme = "https"
		}
		for j := range h.Dimensions {
			d := &h.Dimensions[j]
			w, ht := 1366, 768
			if d.Mobile {
				w, ht = 412, 915
			}
			if d.Width == 0 {
				d.Width = w
			}
			if d.Height == 0 {
				d.Height = ht
			}
		}
	}
}

// ApplyEnv overrides secrets with PRISM_ADMIN_TOKEN and
// PRISM_INTERNAL_AUTH_KEY when they are set and non-empty. A nil lookupEnv
// changes nothing.
func (c *Config) ApplyEnv(lookupEnv func(string) (string, bool)) {
	if lookupEnv == nil {
		return
	}
	if v, ok := lookupEnv(EnvAdminToken); ok && v != "" {
		c.Admin.BearerToken = v
	}
	if v, ok := lookupEnv(EnvInternalAuthKey); ok && v != "" {
		c.Internal.AuthKey = v
	}
	if v, ok := lookupEnv(EnvRedisURL); ok && v != "" {
		c.Cluster.Redis = v
	}
	c.applyServiceEnv(lookupEnv)
}

// InternalEnabled reports whether the internal port should be started: it
// has an address and an auth key.
func (c *Config) InternalEnabled() bool {
	return c.Internal.Address != "" && c.Internal.AuthKey != ""
}

// Warnings returns conditions that are allowed but that an operator should
// hear about at start-up (main logs them).
func (c *Config) Warnings() []string {
	var w []string
	if c.Internal.Address != "" && c.Internal.AuthKey == "" {
		w = append(w, fmt.Sprintf("internal.auth_key is empty: the internal API (%s) is not started; set internal.auth_key or %s to enable it",
			c.Internal.Address, EnvInternalAuthKey))
	}
	// The renderer rounds the online reservation up, so with few tabs a
	// partial reservation can hold back every tab from recache work.
	if pct := c.Render.OnlineReservationPercent; pct > 0 && pct < 100 && (c.Render.Tabs*pct+99)/100 >= c.Render.Tabs {
		w = append(w, fmt.Sprintf("render.online_reservation_percent = %d reserves all %d tab(s) for crawlers: recache, warmup and autorecache renders will never run; raise render.tabs or lower the percentage",
			pct, c.Render.Tabs))
	}
	return w
}

// TrustedPrefixes returns server.trusted_proxies as prefixes (a single IP
// becomes a /32 or /128). Entries that do not parse are skipped; Validate
// reports them.
func (s Server) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.TrustedProxies {
		if pr, err := parseProxy(p); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

// SlogLevel returns the level as a slog.Level (info when unknown).
func (l Log) SlogLevel() slog.Level {
	switch strings.ToLower(l.Level) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func parseProxy(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a := p.Addr(); a.Is4In6() {
			// Peers are compared unmapped (::ffff:10.0.0.1 is 10.0.0.1),
			// so an IPv4-mapped prefix is taken as the IPv4 one it names.
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix %s is shorter than /96", s)
			}
			return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), nil
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isLoopbackAddress reports whether a host:port listens on loopback only.
func isLoopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

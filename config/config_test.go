package config

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/site"
)

// minimal is the smallest valid file.
const minimal = `
[[hosts]]
id = 1
name = "example.com"
origin = "http://127.0.0.1:3000"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot"]
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prism.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// problems returns the *Problem values inside err.
func problems(err error) []*Problem { return problemsOf(err) }

func TestExampleFile(t *testing.T) {
	c, err := LoadWith("../prism.example.toml", env(nil))
	if err != nil {
		t.Fatalf("example file: %v", err)
	}
	def := Default()
	// Every section but hosts holds exactly the documented defaults.
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"server.listen", c.Server.Listen, def.Server.Listen},
		{"server.read_header_timeout", c.Server.ReadHeaderTimeout, def.Server.ReadHeaderTimeout},
		{"server.read_timeout", c.Server.ReadTimeout, def.Server.ReadTimeout},
		{"server.write_timeout", c.Server.WriteTimeout, def.Server.WriteTimeout},
		{"server.idle_timeout", c.Server.IdleTimeout, def.Server.IdleTimeout},
		{"server.max_header_bytes", c.Server.MaxHeaderBytes, def.Server.MaxHeaderBytes},
		{"server.shutdown_timeout", c.Server.ShutdownTimeout, def.Server.ShutdownTimeout},
		{"log", c.Log, def.Log},
		{"admin", c.Admin, def.Admin},
		{"internal", c.Internal, def.Internal},
		{"render", c.Render, def.Render},
		{"cache", c.Cache, def.Cache},
		{"recache.interval", c.Recache.Interval, def.Recache.Interval},
		{"recache.tick", c.Recache.Tick, def.Recache.Tick},
		{"recache.queue_size", c.Recache.QueueSize, def.Recache.QueueSize},
		{"recache.workers", c.Recache.Workers, c.Render.Tabs},
		{"recache.max_attempts", c.Recache.MaxAttempts, def.Recache.MaxAttempts},
		{"recache.journal_dir", c.Recache.JournalDir, def.Recache.JournalDir},
		{"warmup.concurrency", c.Warmup.Concurrency, def.Warmup.Concurrency},
		{"warmup.rate", c.Warmup.Rate, def.Warmup.Rate},
		{"warmup.max_urls", c.Warmup.MaxURLs, def.Warmup.MaxURLs},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
	// The contract defaults from DESIGN.md.
	if c.Server.Listen != ":4000" || c.Admin.Address != "127.0.0.1:4001" || c.Internal.Address != "127.0.0.1:10090" ||
		c.Internal.DaemonID != "prism-01" || c.Render.Tabs != DefaultTabs(runtime.NumCPU()) || c.Render.Timeout.Duration != 15*time.Second ||
		c.Render.OnlineReservationPercent != 50 || c.Cache.Dir != "data/cache" || c.Cache.MemoryMB != 256 ||
		c.Cache.TTL.Duration != 24*time.Hour || c.Cache.StaleTTL.Duration != 72*time.Hour ||
		c.Recache.Interval.Duration != 12*time.Hour {
		t.Errorf("contract defaults differ: %+v", c)
	}
	if c.Render.BlockHosts != nil || c.Cache.StripParams != nil || c.Cache.StaticExtensions != nil {
		t.Errorf("built-in lists should stay nil: %#v %#v %#v", c.Render.BlockHosts, c.Cache.StripParams, c.Cache.StaticExtensions)
	}
	if len(c.Hosts) != 1 || c.Hosts[0].Name != "localhost" || c.Hosts[0].Origin != "http://127.0.0.1:3000" {
		t.Fatalf("hosts = %+v", c.Hosts)
	}
	dims := c.Hosts[0].Dimensions
	if len(dims) != 2 || dims[0].Name != "mobile" || !dims[0].Mobile || dims[0].Width != 412 || dims[1].Name != "desktop" || dims[1].Width != 1366 {
		t.Errorf("dimensions = %+v", dims)
	}
	if c.InternalEnabled() || len(c.Warnings()) != 1 {
		t.Errorf("internal port with an empty key: enabled %v, warnings %q", c.InternalEnabled(), c.Warnings())
	}
}

func TestMinimalDefaults(t *testing.T) {
	c, err := LoadWith(writeFile(t, minimal), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Recache.Workers = 4
	if !reflect.DeepEqual(c.Server, want.Server) || c.Log != want.Log || c.Admin != want.Admin || c.Internal != want.Internal ||
		!reflect.DeepEqual(c.Render, want.Render) || !reflect.DeepEqual(c.Cache, want.Cache) || c.Recache != want.Recache {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	h := c.Hosts[0]
	if h.Scheme != "https" || h.RecacheInterval.Duration != 0 {
		t.Errorf("host defaults: %+v", h)
	}
	d := h.Dimensions[0]
	if d.Width != 1366 || d.Height != 768 || d.Mobile {
		t.Errorf("dimension defaults: %+v", d)
	}
}

func TestDefaultsFromOtherValues(t *testing.T) {
	c, err := Parse([]byte(minimal + `
  [[hosts.dimensions]]
  id = 2
  name = "phone"
  mobile = true
  height = 800

[render]
tabs = 7
block_resource_types = ["image", "STYLESHEET"]
block_hosts = []
keep_script_types = []
always_visible = true
browser_cache = false
`))
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Hosts[0].Dimensions[1]; d.Width != 412 || d.Height != 800 {
		t.Errorf("mobile dimension %dx%d, want 412x800", d.Width, d.Height)
	}
	if c.Recache.Workers != 7 {
		t.Errorf("recache.workers = %d, want render.tabs 7", c.Recache.Workers)
	}
	if got := c.Render.BlockResourceTypes; !reflect.DeepEqual(got, []string{"Image", "Stylesheet"}) {
		t.Errorf("block_resource_types = %q", got)
	}
	if c.Render.BlockHosts == nil || len(c.Render.BlockHosts) != 0 {
		t.Errorf("block_hosts = [] should be empty, not nil: %#v", c.Render.BlockHosts)
	}
	if len(c.Render.KeepScriptTypes) != 0 {
		t.Errorf("keep_script_types = %q", c.Render.KeepScriptTypes)
	}
	if !c.Render.AlwaysVisible {
		t.Error("always_visible = true not read")
	}
	if c.Render.BrowserCache {
		t.Error("browser_cache = false not read")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error, in order of problems
	}{
		{"unknown top-level key", "wrokers = 4\n" + minimal, []string{"wrokers: unknown key (line 1"}},
		{"unknown key in section", "[render]\ntabs = 2\nwrokers = 4\n" + minimal, []string{"render.wrokers: unknown key (line 3"}},
		{"unknown table", "[cahce]\ndir = \"x\"\n" + minimal, []string{"cahce: unknown table (line 1"}},
		{"unknown key in dimension", minimal + "  colour = \"red\"\n", []string{"hosts[0].dimensions[0].colour: unknown key (line 11"}},
		{"unknown key in second host", minimal + "[[hosts]]\nid = 2\nnmae = \"x\"\n", []string{"hosts[1].nmae: unknown key (line 13"}},
		{"several unknown keys", "a = 1\n[server]\nb = 2\n", []string{"a: unknown key (line 1", "server.b: unknown key (line 3"}},
		{"bad duration string", "[render]\ntimeout = \"30 seconds\"\n", []string{`render.timeout: invalid duration "30 seconds"`, "(line 2, column 11)"}},
		{"integer duration", "[render]\ntimeout = 30\n", []string{"render.timeout: must be a duration string", "not a TOML integer (line 2, column 11)"}},
		{"bool duration in host", minimal + "[[hosts]]\nrecache_interval = true\n", []string{"hosts[1].recache_interval: must be a duration string", "not a TOML bool (line 12"}},
		{"durations all at once", "[cache]\nttl = 1\nstale_ttl = \"x\"\n", []string{"cache.ttl:", "(line 2,", "cache.stale_ttl:", "(line 3,"}},
		{"size with a unit", "[cache]\ndisk_max_mb = \"10G\"\n", []string{"cache.disk_max_mb: must be an integer, not a TOML string (line 2, column 15)"}},
		{"wrong type", "[render]\ntabs = \"four\"\n", []string{"render.tabs: must be an integer, not a TOML string (line 2, column 8)"}},
		{"wrong type in dimension", minimal + "  width = \"wide\"\n", []string{"hosts[0].dimensions[0].width: must be an integer, not a TOML string (line 11"}},
		{"string for array", "[server]\ntrusted_proxies = \"10.0.0.1\"\n", []string{"server.trusted_proxies: must be an array of strings", "(line 2"}},
		{"syntax error", "[server]\nlisten = \":4000\n", []string{"(line 2, column"}},
		{"unclosed table", "[render\n", []string{"(line 1, column"}},
		{"duplicate key", "[render]\ntabs = 1\ntabs = 2\n", []string{"already defined (line 3"}},
		{"every kind of problem at once", "wrokers = 4\n[render]\ntabs = \"x\"\ntimeout = 5\n[cahce]\nx = 1\n[[hosts]]\nid = 1.5\n",
			[]string{"wrokers: unknown key (line 1, column 1)", "render.tabs: must be an integer, not a TOML string (line 3, column 8)",
				"render.timeout: must be a duration string", "(line 4, column 11)", "cahce: unknown table (line 5, column 2)",
				"hosts[0].id: must be an integer, not a TOML float (line 8"}},
		{"dotted keys", "render.tabs = \"x\"\nrender.wrokers = 1\n", []string{"render.tabs: must be an integer", "(line 1, column 15)", "render.wrokers: unknown key (line 2, column 8)"}},
		{"inline table unknown key", `hosts = [{id = 1, nmae = "x"}]`, []string{"hosts[0].nmae: unknown key (line 1, column 19)"}},
		{"array element type", "[server]\ntrusted_proxies = [\n  \"10.0.0.1\",\n  # comment\n  7,\n]\n", []string{"server.trusted_proxies[1]: must be a string, not a TOML integer (line 5, column 3)"}},
		{"table for a value", "[render.tabs]\nx = 1\n", []string{"render.tabs: must be an integer, not a table (line 1, column 2)"}},
		{"table for a duration", "[render.timeout]\n", []string{"render.timeout: must be a duration string, not a table (line 1"}},
		{"value for a table", "render = 1\n", []string{"render: must be a table, not a TOML integer (line 1"}},
		{"array of tables for a table", "[[render]]\ntabs = 1\n", []string{"render: must be a table, not an array of tables (line 1, column 3)"}},
		{"syntax error after other problems", "a = 1\nb = \"x\n", []string{"a: unknown key (line 1", "basic strings cannot have new lines (line 2, column"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			rest := msg
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q\nlacks %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
			for _, p := range problems(err) {
				if p.Line == 0 {
					t.Errorf("problem without a line: %v", p)
				}
			}
		})
	}
}

func TestValidateAllAtOnce(t *testing.T) {
	doc := `
[server]
listen = "4000"
trusted_proxies = ["10.0.0.0/8", "not-an-ip"]

[log]
level = "loud"

[render]
tabs = 0
timeout = "100ms"
online_reservation_percent = 120

[cache]
memory_mb = 0
ttl = "0s"

[[hosts]]
id = 1
name = "https://example.com"
origin = "ftp://x"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["re:(unclosed", ""]
  width = 50

  [[hosts.dimensions]]
  id = 1
  name = "Desktop"

[[hosts]]
id = 1
name = "b.example"
aliases = ["B.example."]
origin = "http://127.0.0.1:3001"
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	want := map[string]int{ // key -> line
		"server.listen":                      3,
		"server.trusted_proxies[1]":          4,
		"log.level":                          7,
		"render.tabs":                        10,
		"render.timeout":                     11,
		"render.online_reservation_percent":  12,
		"cache.memory_mb":                    15,
		"cache.ttl":                          16,
		"hosts[0].name":                      20,
		"hosts[0].origin":                    21,
		"hosts[0].dimensions[0].match_ua[0]": 26,
		"hosts[0].dimensions[0].match_ua[1]": 26,
		"hosts[0].dimensions[0].width":       27,
		"hosts[0].dimensions[1].id":          30,
		"hosts[0].dimensions[1].name":        31,
		"hosts[1].id":                        34,
		"hosts[1].aliases[0]":                36,
		"hosts[1].dimensions":                33,
	}
	ps := problems(err)
	got := map[string]int{}
	for _, p := range ps {
		got[p.Key] = p.Line
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%v\ngot  %v\nwant %v", err, got, want)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("error has %d lines, want one per problem (%d):\n%v", n, len(want), err)
	}
	if !strings.Contains(err.Error(), "hosts[0].dimensions[1].id: duplicate id 1 (also hosts[0].dimensions[0]) (line 30)") {
		t.Errorf("duplicate id message: %v", err)
	}
}

func TestValidateMisc(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		wantOK bool
		want   string
	}{
		{"no hosts", "", false, "hosts: at least one"},
		{"valid", minimal, true, ""},
		{"inflight below a response", "[render]\nmax_response_mb = 40\nmax_inflight_mb = 32\n" + minimal, false, "render.max_inflight_mb: 32 is below render.max_response_mb (40)"},
		{"page bytes zero", "[render]\nmax_page_mb = 0\n" + minimal, false, "render.max_page_mb:"},
		{"response bytes too large", "[render]\nmax_response_mb = 5000\n" + minimal, false, "render.max_response_mb:"},
		{"host with port", strings.Replace(minimal, `"example.com"`, `"example.com:8080"`, 1), true, ""},
		{"name with path", strings.Replace(minimal, `"example.com"`, `"example.com/a"`, 1), false, "hosts[0].name:"},
		{"origin with path", strings.Replace(minimal, `:3000"`, `:3000/app"`, 1), false, "hosts[0].origin:"},
		{"crawler list", strings.Replace(minimal, `"Googlebot"`, `"@crawlers", "@AI", "re:(?i)bot"`, 1), true, ""},
		{"unknown crawler list", strings.Replace(minimal, `"Googlebot"`, `"@robots"`, 1), false, "unknown crawler list"},
		{"write timeout below render timeout", minimal + "[server]\nwrite_timeout = \"10s\"\n", false, "server.write_timeout: must be at least render.timeout + 10s"},
		{"ipv6 trusted proxy", minimal + "[server]\ntrusted_proxies = [\"::1\", \"fd00::/8\", \"192.168.1.7\"]\n", true, ""},
		{"bad resource type", minimal + "[render]\nblock_resource_types = [\"pictures\", \"document\"]\n", false, "render.block_resource_types[0]: unknown resource type"},
		{"internal disabled", minimal + "[internal]\naddress = \"\"\n", true, ""},
		{"bad internal address", minimal + "[internal]\naddress = \"nowhere\"\n", false, "internal.address:"},
		{"bad format", minimal + "[log]\nformat = \"xml\"\n", false, "log.format:"},
		{"static extension", minimal + "[cache]\nstatic_extensions = [\"css\"]\n", false, "cache.static_extensions[0]:"},
		{"negative stale", minimal + "[cache]\nstale_ttl = \"-1s\"\n", false, "cache.stale_ttl:"},
		{"zero stale ok", minimal + "[cache]\nstale_ttl = \"0s\"\n", true, ""},
		{"disk bound", minimal + "[cache]\ndisk_max_mb = 10240\n", true, ""},
		{"no disk bound", minimal + "[cache]\ndisk_max_mb = 0\n", true, ""},
		{"negative disk bound", minimal + "[cache]\ndisk_max_mb = -1\n", false, "cache.disk_max_mb: must be between 0 and 1073741824, got -1 (line 12)"},
		{"warm-up path off", minimal + "[render]\nwarm_up_path = \"\"\n", true, ""},
		{"warm-up path with query", minimal + "[render]\nwarm_up_path = \"/a?b=1\"\n", true, ""},
		{"warm-up path relative", minimal + "[render]\nwarm_up_path = \"index.html\"\n", false, "render.warm_up_path:"},
		{"warm-up path absolute URL", minimal + "[render]\nwarm_up_path = \"https://evil.example/\"\n", false, "render.warm_up_path:"},
		{"warm-up path network path", minimal + "[render]\nwarm_up_path = \"//evil.example/\"\n", false, "render.warm_up_path:"},
		{"warm-up path with fragment", minimal + "[render]\nwarm_up_path = \"/#x\"\n", false, "render.warm_up_path:"},
		{"warm-up path with newline", minimal + "[render]\nwarm_up_path = \"/a\\nb\"\n", false, "render.warm_up_path:"},
		{"inline tables", `hosts = [{id = 1, name = "a.example", origin = "http://127.0.0.1:1", dimensions = [{id = 0, name = "d"}]}]`, false, "hosts[0].dimensions[0].id: must be a positive integer, got 0 (line 1)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.wantOK {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAdminTokenLoopbackRule(t *testing.T) {
	tests := []struct {
		address, token string
		env            map[string]string
		ok             bool
	}{
		{"127.0.0.1:4001", "", nil, true},
		{"[::1]:4001", "", nil, true},
		{"localhost:4001", "", nil, true},
		{":4001", "", nil, false},
		{"0.0.0.0:4001", "", nil, false},
		{"10.1.2.3:4001", "", nil, false},
		{":4001", "s3cret", nil, true},
		{":4001", "", map[string]string{EnvAdminToken: "from-env"}, true},
		{":4001", "", map[string]string{EnvAdminToken: ""}, false},
	}
	for _, tc := range tests {
		t.Run(tc.address+"/"+tc.token, func(t *testing.T) {
			doc := minimal + "[admin]\naddress = \"" + tc.address + "\"\nbearer_token = \"" + tc.token + "\"\n"
			_, err := LoadWith(writeFile(t, doc), env(tc.env))
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "admin.address: ") || !strings.Contains(err.Error(), "bearer_token is empty") || !strings.Contains(err.Error(), "(line 12)")) {
				t.Fatalf("error %v, want the loopback rule on admin.address line 12", err)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	doc := minimal + "[admin]\nbearer_token = \"file-token\"\n[internal]\nauth_key = \"file-key\"\n"
	tests := []struct {
		name             string
		env              map[string]string
		wantTok, wantKey string
	}{
		{"none", nil, "file-token", "file-key"},
		{"both", map[string]string{EnvAdminToken: "env-token", EnvInternalAuthKey: "env-key"}, "env-token", "env-key"},
		{"empty values ignored", map[string]string{EnvAdminToken: "", EnvInternalAuthKey: ""}, "file-token", "file-key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadWith(writeFile(t, doc), env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Admin.BearerToken != tc.wantTok || c.Internal.AuthKey != tc.wantKey {
				t.Errorf("token %q key %q, want %q %q", c.Admin.BearerToken, c.Internal.AuthKey, tc.wantTok, tc.wantKey)
			}
			if !c.InternalEnabled() || len(c.Warnings()) != 0 {
				t.Errorf("internal port should be enabled with a key: %v %q", c.InternalEnabled(), c.Warnings())
			}
		})
	}
	// The environment alone enables the internal port.
	c, err := LoadWith(writeFile(t, minimal), env(map[string]string{EnvInternalAuthKey: "k"}))
	if err != nil || !c.InternalEnabled() {
		t.Fatalf("env key: enabled=%v err=%v", c != nil && c.InternalEnabled(), err)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := LoadWith(filepath.Join(t.TempDir(), "missing.toml"), nil); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
	p := writeFile(t, "[render]\ntabs = 0\n")
	_, err := LoadWith(p, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "config "+p+":\n") {
		t.Fatalf("error should start with the file name on its own line: %v", err)
	}
	if len(problems(err)) != 2 { // render.tabs and hosts
		t.Errorf("want 2 problems, got %v", err)
	}
}

func TestHelpers(t *testing.T) {
	s := Server{TrustedProxies: []string{"10.0.0.0/8", "192.168.1.7", "::ffff:10.0.0.1", "bad", "2001:db8::/32"}}
	got := s.TrustedPrefixes()
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "10.0.0.1/32", "2001:db8::/32"}
	if len(got) != len(want) {
		t.Fatalf("prefixes %v, want %v", got, want)
	}
	for i := range got {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d = %v, want %v", i, got[i], want[i])
		}
	}
	if (Log{Level: "debug"}).SlogLevel().String() != "DEBUG" || (Log{Level: "warn"}).SlogLevel().String() != "WARN" {
		t.Error("SlogLevel")
	}
	d := Duration{90 * time.Minute}
	b, _ := d.MarshalText()
	var back Duration
	if err := back.UnmarshalText(b); err != nil || back != d {
		t.Errorf("round trip %s -> %v %v", b, back, err)
	}
	if err := back.UnmarshalText([]byte("30")); err == nil {
		t.Error("bare number accepted as a duration")
	}
}

func FuzzParse(f *testing.F) {
	ex, err := os.ReadFile("../prism.example.toml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(ex), minimal, "", "[render]\ntimeout = 30\n", "a.b.c = 1\n[a]\n", "[[hosts]]\n[[hosts.dimensions]]\n[hosts.x]\n",
		"hosts = [{id = 1, dimensions = [{match_ua = [\"re:(\"]}]}]", "[server]\ntrusted_proxies = [[1]]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		c.ApplyEnv(env(map[string]string{EnvAdminToken: "x"}))
		_ = c.Validate()
		_ = c.Warnings()
		_ = c.Server.TrustedPrefixes()
	})
}

func TestWarnsWhenReservationTakesEveryTab(t *testing.T) {
	for _, tc := range []struct {
		tabs, pct int
		warn      bool
	}{
		{1, 50, true}, {2, 60, true}, {2, 50, false}, {4, 50, false}, {1, 0, false}, {4, 100, false},
	} {
		c := Default()
		c.Internal.Address = ""
		c.Render.Tabs, c.Render.OnlineReservationPercent = tc.tabs, tc.pct
		got := false
		for _, w := range c.Warnings() {
			got = got || strings.Contains(w, "online_reservation_percent")
		}
		if got != tc.warn {
			t.Errorf("tabs %d, percent %d: warning %v, want %v (%q)", tc.tabs, tc.pct, got, tc.warn, c.Warnings())
		}
	}
}

// Decoding and semantic problems come back together, in one run, each with
// its key and line.
func TestLoadAllProblemsAtOnce(t *testing.T) {
	doc := `[render]
wrokers = 4
tabs = "four"
timeout = "15 seconds"

[cahce]
dir = "x"

[[hosts]]
id = 1
name = "a.example"
origin = "http://127.0.0.1:3000"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot"]

[[hosts]]
id = 1
name = "b.example"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot"]
`
	_, err := LoadWith(writeFile(t, doc), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	got := map[string]int{}
	for _, p := range problems(err) {
		got[p.Key] = p.Line
	}
	want := map[string]int{
		"render.wrokers":  2,  // unknown key
		"render.tabs":     3,  // wrong type
		"render.timeout":  4,  // bad duration
		"cahce":           6,  // unknown table
		"hosts[1].id":     20, // duplicate host id
		"hosts[1].origin": 0,  // missing origin: the host's line
	}
	for k, line := range want {
		l, ok := got[k]
		if !ok || (line != 0 && l != line) {
			t.Errorf("%s: line %d (reported: %v), want line %d\n%v", k, l, ok, line, err)
		}
	}
	if _, ok := got["hosts[1].origin"]; ok && got["hosts[1].origin"] == 0 {
		t.Errorf("missing origin has no line: %v", err)
	}
}

func TestSiteOptions(t *testing.T) {
	c, err := Parse([]byte(minimal + "[cache]\nstrip_params = [\"ref\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := c.SiteOptions()
	if len(opts.Hosts) != 1 || opts.Hosts[0].Origin == nil || opts.Hosts[0].Name != c.Hosts[0].Name {
		t.Fatalf("SiteOptions hosts = %+v", opts.Hosts)
	}
	if got := opts.Hosts[0].Origin.String(); got != c.Hosts[0].Origin {
		t.Fatalf("origin %q, want %q", got, c.Hosts[0].Origin)
	}
	d := opts.Hosts[0].Dimensions[0]
	if d.Width != 1366 || d.Height != 768 || len(d.MatchUA) == 0 {
		t.Fatalf("dimension = %+v, want the config's defaults filled in", d)
	}
	if len(opts.StripParams) != 1 || opts.StripParams[0] != "ref" {
		t.Fatalf("strip params = %v", opts.StripParams)
	}
	if _, err := site.New(opts); err != nil {
		t.Fatalf("site.New(SiteOptions()) of a valid config: %v", err)
	}
}

func TestCluster(t *testing.T) {
	c, err := LoadWith(writeFile(t, minimal), env(nil))
	if err != nil || c.Cluster.Enabled() || c.Cluster.KeyPrefix != "prism:" || c.Cluster.NodeID == "" {
		t.Fatalf("default cluster = %+v (err %v), want off with a prefix and a node id", c.Cluster, err)
	}
	on := "[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nnode_id = \"a\"\n" + minimal
	c, err = LoadWith(writeFile(t, on), env(map[string]string{EnvRedisURL: "redis://:secret@10.0.0.1:6380/1"}))
	if err != nil || !c.Cluster.Enabled() || c.Cluster.Redis != "redis://:secret@10.0.0.1:6380/1" {
		t.Fatalf("cluster with PRISM_REDIS_URL = %+v (err %v), want the environment's URL", c.Cluster, err)
	}
	bad := "[cluster]\nredis = \"http://127.0.0.1:6379\"\nnode_id = \"a b\"\nkey_prefix = \"\"\ncall_timeout = \"1ms\"\nlock_lease = \"10h\"\n" + minimal
	_, err = LoadWith(writeFile(t, bad), env(nil))
	got := map[string]bool{}
	for _, p := range problems(err) {
		got[p.Key] = true
	}
	for _, k := range []string{"cluster.redis", "cluster.node_id", "cluster.key_prefix", "cluster.call_timeout", "cluster.lock_lease"} {
		if !got[k] {
			t.Errorf("no problem reported for %s (got %v)", k, err)
		}
	}
	// Without redis the section is not checked: a single node.
	if _, err := LoadWith(writeFile(t, "[cluster]\nnode_id = \"a b\"\n"+minimal), env(nil)); err != nil {
		t.Errorf("an unused cluster section was checked: %v", err)
	}
}

func TestWarmup(t *testing.T) {
	c, err := LoadWith(writeFile(t, "[render]\ntabs = 3\n"+minimal), env(nil))
	if err != nil || c.Warmup != (Warmup{Concurrency: 0, Rate: 0, MaxURLs: 50_000}) {
		t.Fatalf("default warmup = %+v (err %v), want no bound of its own, no rate, 50000 URLs", c.Warmup, err)
	}
	for _, tc := range []struct {
		toml string
		want Warmup
	}{
		{"concurrency = 8\nrate = 5\nmax_urls = 200", Warmup{8, 5, 200}},
		{"rate = 0.5", Warmup{0, 0.5, 50_000}},
		{"concurrency = 0\nrate = 0", Warmup{0, 0, 50_000}},
	} {
		doc := "[warmup]\n" + tc.toml + "\n" + minimal
		c, err := LoadWith(writeFile(t, doc), env(nil))
		if err != nil || c.Warmup != tc.want {
			t.Errorf("%q: warmup = %+v (err %v), want %+v", tc.toml, c.Warmup, err, tc.want)
		}
	}
	for _, tc := range []struct{ toml, key, msg string }{
		{"concurrency = -1", "warmup.concurrency", "between 0 and 1024"},
		{"concurrency = 5000", "warmup.concurrency", "between 0 and 1024"},
		{"rate = -2", "warmup.rate", "between 0"},
		{"rate = nan", "warmup.rate", "between 0"},
		{"rate = inf", "warmup.rate", "between 0"},
		{"max_urls = 0", "warmup.max_urls", "between 1"},
		{"max_urls = 20000000", "warmup.max_urls", "between 1"},
		{`rate = "fast"`, "warmup.rate", ""},
		{"concurency = 4", "warmup.concurency", "unknown key"},
	} {
		_, err := LoadWith(writeFile(t, "# warmup\n[warmup]\n"+tc.toml+"\n"+minimal), env(nil))
		ps := problems(err)
		if len(ps) != 1 || ps[0].Key != tc.key || ps[0].Line != 3 || !strings.Contains(ps[0].Msg, tc.msg) {
			t.Errorf("%q: problems %v, want one for %s on line 3 saying %q", tc.toml, err, tc.key, tc.msg)
		}
	}
}

func TestDefaultTabs(t *testing.T) {
	for _, tc := range []struct{ cores, want int }{{0, 2}, {1, 2}, {2, 4}, {4, 8}, {8, 16}, {64, 16}} {
		if got := DefaultTabs(tc.cores); got != tc.want {
			t.Errorf("DefaultTabs(%d) = %d, want %d", tc.cores, got, tc.want)
		}
	}
}

package adminapi

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/internal/promcheck"
	"github.com/prismproxy/prism/prerender"
)

// endpoints lists every route with a valid request.
var endpoints = []struct{ method, path, body string }{
	{"GET", "/status", ""},
	{"GET", "/metrics", ""},
	{"POST", "/purge/url", `{"url":"/a"}`},
	{"POST", "/purge/pattern", `{"pattern":"/a/*"}`},
	{"POST", "/purge/all", ""},
	{"POST", "/render", `{"url":"/a"}`},
	{"GET", "/warmup/status", ""},
	{"POST", "/warmup", `{"sitemap_url":"https://example.com/none.xml"}`},
	{"POST", "/warmup/cancel", ""},
	{"DELETE", "/warmup", ""},
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	auths := []struct {
		name, header string
		ok           bool
	}{
		{"none", "", false},
		{"wrong", "Bearer nope", false},
		{"prefix", "Bearer " + testToken[:4], false},
		{"longer", "Bearer " + testToken + "x", false},
		{"basic", "Basic " + testToken, false},
		{"right", "Bearer " + testToken, true},
		{"right lowercase scheme", "bearer " + testToken, true},
	}
	for _, ep := range endpoints {
		for _, a := range auths {
			t.Run(ep.method+ep.path+"/"+a.name, func(t *testing.T) {
				code, body := e.doAuth(ep.method, ep.path, ep.body, a.header)
				if a.ok && code == http.StatusUnauthorized {
					t.Fatalf("got 401 with the right token: %s", body)
				}
				if !a.ok {
					if code != http.StatusUnauthorized {
						t.Fatalf("got %d, want 401: %s", code, body)
					}
					if m := decode(t, body); m["error"] == "" || m["error"] == nil {
						t.Fatalf("401 body %s has no error", body)
					}
				}
			})
		}
	}
	t.Run("health needs no token", func(t *testing.T) {
		if code, body := e.doAuth("GET", "/health", "", ""); code != 200 {
			t.Fatalf("GET /health = %d %s", code, body)
		}
	})
	t.Run("unknown path without token is 401", func(t *testing.T) {
		if code, _ := e.doAuth("GET", "/nope", "", ""); code != 401 {
			t.Fatalf("got %d, want 401", code)
		}
	})
}

func TestNoTokenConfigured(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *env) { o.Token = "" })
	if code, body := e.doAuth("GET", "/status", "", ""); code != 200 {
		t.Fatalf("GET /status without token configured = %d %s", code, body)
	}
}

func TestHealth(t *testing.T) {
	var healthErr error
	e := newEnv(t, func(o *Options, _ *env) { o.Health = func() error { return healthErr } })
	check := func(wantCode int, want map[string]any) {
		t.Helper()
		code, body := e.doAuth("GET", "/health", "", "")
		if code != wantCode {
			t.Fatalf("GET /health = %d, want %d (%s)", code, wantCode, body)
		}
		if got := decode(t, body); !reflect.DeepEqual(got, want) {
			t.Fatalf("GET /health body = %v, want %v", got, want)
		}
	}
	check(200, map[string]any{"status": "ok"})
	healthErr = errors.New("chrome not responding")
	check(503, map[string]any{"status": "unhealthy", "reason": "chrome not responding"})
	healthErr = nil
	check(200, map[string]any{"status": "ok"})
	e.srv.Drain()
	check(503, map[string]any{"status": "unhealthy", "reason": "draining"})
}

func TestStatus(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start.Add(3600 * time.Second)
	e := newEnv(t, func(o *Options, _ *env) {
		o.Start = start
		o.Now = func() time.Time { return now }
		o.Pool = func() prerender.Capacity { return prerender.Capacity{Tabs: 8, Free: 5} }
		o.Renders = func() prerender.Stats { return prerender.Stats{Renders: 4521, Active: 3, Crashes: 1} }
		o.QueueDepth = func() int { return 4 }
	})
	e.put(1, 1, "/a")
	e.put(1, 2, "/a")
	code, body := e.do("GET", "/status", "")
	if code != 200 {
		t.Fatalf("GET /status = %d %s", code, body)
	}
	var got map[string]map[string]json.Number
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["uptime_secs"]) != "3600" {
		t.Errorf("uptime_secs = %s, want 3600", raw["uptime_secs"])
	}
	delete(raw, "uptime_secs")
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("status %s: %v", body, err)
	}
	mem := e.store.Stats().MemoryBytes
	want := map[string]map[string]json.Number{
		"cache":   {"entries": "2", "memory_bytes": json.Number(jsonInt(mem))},
		"pool":    {"size": "8", "available": "5", "crashes": "1"},
		"renders": {"total": "4521", "active": "3", "queue_depth": "4"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("status = %v\nwant %v", got, want)
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestMetrics(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *env) {
		o.Pool = func() prerender.Capacity { return prerender.Capacity{Tabs: 4, Free: 3} }
		o.Metrics.Counter(`prism_requests_total{status="hit"}`, "Requests.").Add(3)
	})
	req, _ := http.NewRequest("GET", e.http.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
	for _, want := range []string{`prism_requests_total{status="hit"} 3`, "prism_pool_size 4", "prism_pool_available 3", "prism_uptime_seconds "} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
}

// TestMetricsEncoding checks that /metrics is gzipped exactly when the
// scraper accepts it, says so in Vary either way, and carries the same
// text both ways.
func TestMetricsEncoding(t *testing.T) {
	e := newEnv(t)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	scrape := func(ae string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.http.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("Accept-Encoding %q: %v", ae, err)
			}
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("Accept-Encoding %q: %v", ae, err)
		}
		return resp, string(b)
	}
	for _, tc := range []struct {
		ae   string
		gzip bool
	}{
		{"", false}, {"identity", false}, {"gzip;q=0", false}, {"br", false},
		{"gzip", true}, {"GZIP", true}, {"deflate, gzip;q=0.5", true}, {"x-gzip", true}, {"*", true},
	} {
		resp, text := scrape(tc.ae)
		if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
			t.Errorf("Accept-Encoding %q: gzipped %v, want %v", tc.ae, got, tc.gzip)
		}
		if v := resp.Header.Get("Vary"); v != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: Vary %q", tc.ae, v)
		}
		_, problems := promcheck.Check(text)
		for _, err := range problems {
			t.Errorf("Accept-Encoding %q: %v", tc.ae, err)
		}
		if !strings.Contains(text, "# HELP prism_uptime_seconds Time since PRISM started, in seconds.\n# TYPE prism_uptime_seconds gauge\n") ||
			!strings.Contains(text, "# TYPE go_goroutines gauge\n") {
			t.Errorf("Accept-Encoding %q: text lacks HELP/TYPE lines:\n%.600s", tc.ae, text)
		}
	}
}

// TestErrors covers the error paths common to every endpoint.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	big := `{"url":"/` + strings.Repeat("a", MaxBodyBytes) + `"}`
	bigSpace := `{"url":"/a"}` + strings.Repeat(" ", MaxBodyBytes)
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown path", "GET", "/nope", "", 404},
		{"unknown nested path", "POST", "/purge/nope", "{}", 404},
		{"wrong method status", "POST", "/status", "", 405},
		{"wrong method purge", "GET", "/purge/url", "", 405},
		{"wrong method render", "PUT", "/render", `{"url":"/a"}`, 405},
		{"wrong method health", "POST", "/health", "", 405},
		{"empty body", "POST", "/purge/url", "", 400},
		{"not json", "POST", "/purge/url", "url=/a", 400},
		{"json array", "POST", "/purge/url", `["/a"]`, 400},
		{"wrong type", "POST", "/purge/url", `{"url":1}`, 400},
		{"unknown field", "POST", "/purge/url", `{"ur":"/a"}`, 400},
		{"trailing data", "POST", "/purge/url", `{"url":"/a"}{"url":"/b"}`, 400},
		{"trailing garbage", "POST", "/purge/url", `{"url":"/a"} x`, 400},
		{"missing url", "POST", "/purge/url", `{}`, 400},
		{"missing pattern", "POST", "/purge/pattern", `{}`, 400},
		{"missing render url", "POST", "/render", `{}`, 400},
		{"missing sitemap", "POST", "/warmup", `{}`, 400},
		{"oversized purge", "POST", "/purge/url", big, 413},
		{"oversized padding", "POST", "/purge/url", bigSpace, 413},
		{"oversized purge all", "POST", "/purge/all", big, 413},
		{"oversized render", "POST", "/render", big, 413},
		{"oversized warmup", "POST", "/warmup", big, 413},
		{"cancel without warmup", "POST", "/warmup/cancel", "", 409},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(tt.method, tt.path, tt.body)
			if code != tt.want {
				t.Fatalf("%s %s = %d, want %d (%s)", tt.method, tt.path, code, tt.want, body)
			}
			m := decode(t, body)
			if msg, _ := m["error"].(string); msg == "" || len(m) != 1 {
				t.Fatalf("error body = %s, want {\"error\": \"...\"}", body)
			}
		})
	}
}

func TestPanicRecovered(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *env) {
		o.QueueDepth = func() int { panic("boom") }
	})
	code, body := e.do("GET", "/status", "")
	if code != 500 || decode(t, body)["error"] != "internal error" {
		t.Fatalf("GET /status with a panic = %d %s", code, body)
	}
}

func TestPurgeURL(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name       string
		url        string
		want       bool
		gone, kept []cachestore.Key
	}{
		{
			name: "path on every host and dimension",
			url:  "/p/a",
			want: true,
			gone: []cachestore.Key{key(1, 1, "/p/a"), key(1, 2, "/p/a"), key(2, 7, "/p/a")},
			kept: []cachestore.Key{key(1, 1, "/p/b"), key(1, 1, "/p/a?x=1")},
		},
		{
			name: "full url on its host only",
			url:  "https://example.com/p/a",
			want: true,
			gone: []cachestore.Key{key(1, 1, "/p/a"), key(1, 2, "/p/a")},
			kept: []cachestore.Key{key(2, 7, "/p/a")},
		},
		{
			name: "alias host",
			url:  "http://www.example.com/p/a",
			want: true,
			gone: []cachestore.Key{key(1, 1, "/p/a"), key(1, 2, "/p/a")},
			kept: []cachestore.Key{key(2, 7, "/p/a")},
		},
		{
			name: "query normalized",
			url:  "/p/a?y=2&x=1&utm_source=z",
			want: true,
			gone: []cachestore.Key{key(1, 1, "/p/a?x=1&y=2")},
			kept: []cachestore.Key{key(1, 1, "/p/a")},
		},
		{
			name: "not cached",
			url:  "/p/zzz",
			want: false,
			kept: []cachestore.Key{key(1, 1, "/p/a")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.store.DeleteAll()
			for _, k := range append(slices.Clone(tt.gone), tt.kept...) {
				e.put(k.HostID, k.DimensionID, k.URL)
			}
			code, body := e.do("POST", "/purge/url", `{"url":`+quote(tt.url)+`}`)
			if code != 200 {
				t.Fatalf("purge = %d %s", code, body)
			}
			if got := decode(t, body); !reflect.DeepEqual(got, map[string]any{"purged": tt.want}) {
				t.Fatalf("purge body = %v, want purged=%v", got, tt.want)
			}
			for _, k := range tt.gone {
				if e.has(k) {
					t.Errorf("%v still cached", k)
				}
			}
			for _, k := range tt.kept {
				if !e.has(k) {
					t.Errorf("%v purged, should be kept", k)
				}
			}
		})
	}
	for _, bad := range []string{"products", "//evil.com/a", "https://evil.com/a", "ftp://example.com/a", "/../etc/passwd", "/a/%2e%2e/%2e%2e/x", "https://user:pw@example.com/a"} {
		t.Run("bad "+bad, func(t *testing.T) {
			if code, body := e.do("POST", "/purge/url", `{"url":`+quote(bad)+`}`); code != 400 {
				t.Fatalf("purge %q = %d %s, want 400", bad, code, body)
			}
		})
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestPurgePattern(t *testing.T) {
	e := newEnv(t)
	keys := []cachestore.Key{
		key(1, 1, "/products/a"), key(1, 2, "/products/a"), key(1, 1, "/products/b?color=red"),
		key(1, 1, "/products/a/reviews"), key(1, 1, "/products"), key(1, 1, "/blog/x"),
		key(2, 7, "/products/a"), key(2, 7, "/products/c/d"), key(1, 1, "/search?q=shoes"),
	}
	tests := []struct {
		pattern string
		want    int
	}{
		{"/products/*", 4},  // one segment, both hosts, all dimensions, query ignored
		{"/products/**", 6}, // across segments
		{"/products/**/reviews", 1},
		{"/products", 1},
		{"https://example.com/products/*", 3},
		{"https://shop.test/products/**", 2},
		{"/blog/*", 1},
		{"/search?q=*", 1}, // matched against path and query
		{"/nothing/*", 0},
		{"/**", len(keys)},
		{"**", len(keys)},
		{"/{products,blog}/*", 5},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			e.store.DeleteAll()
			for _, k := range keys {
				e.put(k.HostID, k.DimensionID, k.URL)
			}
			code, body := e.do("POST", "/purge/pattern", `{"pattern":`+quote(tt.pattern)+`}`)
			if code != 200 {
				t.Fatalf("purge = %d %s", code, body)
			}
			if got := decode(t, body); !reflect.DeepEqual(got, map[string]any{"purged_count": float64(tt.want)}) {
				t.Fatalf("purge %q body = %v, want purged_count %d", tt.pattern, got, tt.want)
			}
			left := 0
			for _, k := range keys {
				if e.has(k) {
					left++
				}
			}
			if left != len(keys)-tt.want {
				t.Fatalf("%d entries left, want %d", left, len(keys)-tt.want)
			}
		})
	}
	for _, bad := range []string{"/products/{a", "/products/[a", "products/*", "https://evil.com/*", "ftp://example.com/*", "/" + strings.Repeat("a", maxPatternLen)} {
		t.Run("bad "+bad[:min(len(bad), 30)], func(t *testing.T) {
			if code, body := e.do("POST", "/purge/pattern", `{"pattern":`+quote(bad)+`}`); code != 400 {
				t.Fatalf("purge %q = %d %s, want 400", bad, code, body)
			}
		})
	}
}

func TestPurgeAll(t *testing.T) {
	e := newEnv(t)
	keys := []cachestore.Key{e.put(1, 1, "/a"), e.put(1, 2, "/a"), e.put(2, 7, "/b")}
	for i, want := range []int{3, 0} {
		code, body := e.do("POST", "/purge/all", "")
		if code != 200 {
			t.Fatalf("purge all #%d = %d %s", i, code, body)
		}
		if got := decode(t, body); !reflect.DeepEqual(got, map[string]any{"purged_count": float64(want)}) {
			t.Fatalf("purge all #%d = %v, want %d", i, got, want)
		}
	}
	for _, k := range keys {
		if e.has(k) {
			t.Errorf("%v still cached", k)
		}
	}
	if n := e.store.Stats().Entries; n != 0 {
		t.Errorf("Stats().Entries = %d after purge all", n)
	}
}

func TestRender(t *testing.T) {
	e := newEnv(t)
	render := func(body string) (int, map[string]any) {
		t.Helper()
		code, b := e.do("POST", "/render", body)
		return code, decode(t, b)
	}
	t.Run("miss then hit", func(t *testing.T) {
		// No dimension named: every dimension of the host is rendered; the
		// spec's fields are the first dimension's.
		k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/products/widget-pro"}
		k2 := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/products/widget-pro"}
		for _, want := range []string{"MISS", "HIT"} {
			code, m := render(`{"url":"/products/widget-pro"}`)
			if code != 200 {
				t.Fatalf("render = %d %v", code, m)
			}
			dim := func(name string, k cachestore.Key) map[string]any {
				return map[string]any{"dimension": name, "cache_status": want, "render_time_ms": float64(12), "html_bytes": float64(len(pageHTML(k)))}
			}
			wantBody := map[string]any{"status": "ok", "cache_status": want, "render_time_ms": float64(12), "html_bytes": float64(len(pageHTML(k))),
				"dimensions": []any{dim("desktop", k), dim("mobile", k2)}}
			if !reflect.DeepEqual(m, wantBody) {
				t.Fatalf("render = %v, want %v", m, wantBody)
			}
			if !e.has(k) || !e.has(k2) {
				t.Fatalf("%v or %v not cached after render", k, k2)
			}
			for _, key := range []cachestore.Key{k, k2} {
				if _, ok := e.tracked.Load(key); !ok {
					t.Fatalf("%v stored but the scheduler was not told (Track)", key)
				}
			}
		}
		// One dimension named: the spec's fields alone.
		code, m := render(`{"url":"/products/widget-pro","dimension":"mobile"}`)
		wantBody := map[string]any{"status": "ok", "cache_status": "HIT", "render_time_ms": float64(12), "html_bytes": float64(len(pageHTML(k2)))}
		if code != 200 || !reflect.DeepEqual(m, wantBody) {
			t.Fatalf("render mobile = %d %v, want %v", code, m, wantBody)
		}
		if c, _ := e.classes.Load(k); c != prerender.Online {
			t.Errorf("render class = %v, want Online", c)
		}
	})
	keyTests := []struct {
		name, body string
		want       cachestore.Key
	}{
		{"full url", `{"url":"https://shop.test/x?b=2&a=1"}`, key(2, 7, "/x?a=1&b=2")},
		{"dimension name", `{"url":"/d","dimension":"mobile"}`, key(1, 2, "/d")},
		{"dimension id", `{"url":"/d","dimension":2}`, key(1, 2, "/d")},
		{"dimension id string", `{"url":"/e","dimension":"2"}`, key(1, 2, "/e")},
		{"dimension null", `{"url":"/f","dimension":null}`, key(1, 1, "/f")},
		{"dot segments inside root", `{"url":"/a/../g"}`, key(1, 1, "/g")},
	}
	for _, tt := range keyTests {
		t.Run(tt.name, func(t *testing.T) {
			if code, m := render(tt.body); code != 200 {
				t.Fatalf("render = %d %v", code, m)
			}
			if !e.has(tt.want) {
				t.Fatalf("%v not cached", tt.want)
			}
		})
	}
	bad := []string{
		`{"url":"/../etc/passwd"}`,
		`{"url":"/a/../../etc/passwd"}`,
		`{"url":"/%2e%2e/etc/passwd"}`,
		`{"url":"/%2E%2E%2Fetc%2Fpasswd"}`,
		`{"url":"/a/%252e%252e/%252e%252e/x"}`,
		`{"url":"/..%5c..%5cwindows"}`,
		`{"url":"https://example.com/../../x"}`,
		`{"url":"https://evil.com/a"}`,
		`{"url":"http://127.0.0.1:1/a"}`,
		`{"url":"//evil.com/a"}`,
		`{"url":"javascript:alert(1)"}`,
		`{"url":"file:///etc/passwd"}`,
		`{"url":"a/b"}`,
		`{"url":"/a%00b"}`,
		`{"url":"/a%zz"}`,
		`{"url":"/a","dimension":"tablet"}`,
		`{"url":"/a","dimension":99}`,
		`{"url":"/a","dimension":1.5}`,
		`{"url":"/a","dimension":true}`,
		`{"url":"https://shop.test/a","dimension":"mobile"}`,
	}
	for _, body := range bad {
		t.Run("bad "+body, func(t *testing.T) {
			before := e.refreshes.Load()
			if code, m := render(body); code != 400 {
				t.Fatalf("render %s = %d %v, want 400", body, code, m)
			}
			if e.refreshes.Load() != before {
				t.Fatalf("a refused render reached Refresh")
			}
		})
	}
	t.Run("render failure is 500", func(t *testing.T) {
		e.failURL = "/broken"
		defer func() { e.failURL = "" }()
		code, m := render(`{"url":"/broken","dimension":"desktop"}`)
		// A short cause for the client; the chain (addresses, URLs) only
		// in the log.
		if msg, _ := m["error"].(string); code != 500 || msg != "render failed (desktop): browser unavailable" {
			t.Fatalf("render = %d %v, want 500 with a short cause", code, m)
		}
		code, m = render(`{"url":"/broken"}`)
		if msg, _ := m["error"].(string); code != 500 || strings.Contains(msg, "10.0.0.7") || strings.Contains(msg, "internal.example") {
			t.Fatalf("render (every dimension) = %d %v, want 500 without the chain", code, m)
		}
	})
}

func TestNewRequiresDeps(t *testing.T) {
	e := newEnv(t)
	base := Options{Sites: e.sites, Store: e.store, Refresh: e.refresh}
	for name, mut := range map[string]func(*Options){
		"sites":   func(o *Options) { o.Sites = nil },
		"store":   func(o *Options) { o.Store = nil },
		"refresh": func(o *Options) { o.Refresh = nil },
	} {
		o := base
		mut(&o)
		if _, err := New(o); err == nil {
			t.Errorf("New without %s: no error", name)
		}
	}
}

func key(host, dim int, u string) cachestore.Key {
	return cachestore.Key{HostID: host, DimensionID: dim, URL: u}
}

package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prismproxy/prism/adminapi"
	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

const cliTestToken = "cli-token"

// cliEnv is a live admin API (real adminapi.Server, real store, fake
// Refresh) behind an httptest server, and an origin that serves sitemaps.
type cliEnv struct {
	admin   *httptest.Server
	store   *cachestore.Store
	failURL atomic.Value // string: Refresh fails for this URL
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	e := &cliEnv{}
	e.failURL.Store("")
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sitemap.xml":
			fmt.Fprint(w, `<urlset><url><loc>https://example.com/a</loc></url><url><loc>https://example.com/b</loc></url></urlset>`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(origin.Close)
	ou, _ := url.Parse(origin.URL)
	sites, err := site.New(site.Options{Hosts: []site.Host{{
		ID: 1, Name: "example.com", Origin: ou,
		Dimensions: []site.Dimension{{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.store, err = cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(ctx context.Context, k cachestore.Key, class prerender.Class) (fill.Outcome, error) {
		if k.URL == e.failURL.Load().(string) {
			return fill.Outcome{}, errors.New("render failed")
		}
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte("<html>" + k.URL + "</html>"))
		zw.Close()
		ent := &cachestore.Entry{Key: k, Status: 200, Body: b.Bytes()}
		if err := e.store.Put(ent); err != nil {
			return fill.Outcome{}, err
		}
		return fill.Outcome{Entry: ent, Stored: true, Previous: fill.CacheMiss}, nil
	}
	sched, err := recache.New(recache.Options{
		Sites: sites, Refresh: refresh, Capacity: func() int { return 2 }, Store: e.store,
		Tick: 5 * time.Millisecond, Backoff: time.Millisecond, JournalDir: t.TempDir(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.New(adminapi.Options{
		Token: cliTestToken, Sites: sites, Store: e.store, Logger: quiet,
		Refresh: refresh, Warm: sched.Warm,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { e.store.Run(ctx); done <- struct{}{} }()
	go func() { sched.Run(ctx); done <- struct{}{} }()
	go func() { srv.Run(ctx); done <- struct{}{} }()
	e.admin = httptest.NewServer(srv)
	t.Cleanup(func() {
		e.admin.Close()
		cancel()
		<-done
		<-done
		<-done
		sched.Close()
		e.store.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !e.store.Stats().IndexReady {
		if time.Now().After(deadline) {
			t.Fatal("store index never ready")
		}
		<-tick.C
	}
	return e
}

func (e *cliEnv) put(u string) {
	e.store.Put(&cachestore.Entry{Key: cachestore.Key{HostID: 1, DimensionID: 1, URL: u}, Status: 200, Body: []byte("x")})
}

func (e *cliEnv) has(u string) bool {
	_, ok := e.store.Get(cachestore.Key{HostID: 1, DimensionID: 1, URL: u})
	return ok
}

// runTestCLI runs the CLI with a fast poll and the given environment.
func runTestCLI(args []string, env map[string]string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	c := &adminCLI{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }, poll: 5 * time.Millisecond}
	code = c.run(args)
	return code, out.String(), errOut.String()
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no args", nil, exitUsage},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"purge nothing", []string{"purge"}, exitUsage},
		{"purge two", []string{"purge", "--url", "/a", "--all"}, exitUsage},
		{"purge unknown flag", []string{"purge", "--nope"}, exitUsage},
		{"purge positional", []string{"purge", "--all", "extra"}, exitUsage},
		{"warmup nothing", []string{"warmup"}, exitUsage},
		{"warmup cancel and sitemap", []string{"warmup", "--cancel", "--sitemap", "x"}, exitUsage},
		{"bad admin address", []string{"purge", "--all", "--admin", "nohostport"}, exitUsage},
		{"missing config", []string{"purge", "--all", "--config", "/nonexistent/prism.toml"}, exitUsage},
		{"help", []string{"help"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runTestCLI(tt.args, nil)
			if code != tt.want {
				t.Fatalf("exit = %d, want %d (stderr %q)", code, tt.want, stderr)
			}
			if tt.want == exitUsage && stderr == "" {
				t.Fatalf("usage error with empty stderr")
			}
		})
	}
}

func TestCLIPurge(t *testing.T) {
	e := newCLIEnv(t)
	addr := strings.TrimPrefix(e.admin.URL, "http://")
	flags := []string{"--admin", addr, "--token", cliTestToken}

	e.put("/products/a")
	e.put("/products/b")
	e.put("/blog/x")
	code, out, stderr := runTestCLI(append([]string{"purge", "--pattern", "/products/*"}, flags...), nil)
	if code != 0 || out != "purged_count: 2\n" {
		t.Fatalf("purge --pattern = %d %q %q", code, out, stderr)
	}
	code, out, _ = runTestCLI(append([]string{"purge", "--url", "/blog/x"}, flags...), nil)
	if code != 0 || out != "purged: true\n" || e.has("/blog/x") {
		t.Fatalf("purge --url = %d %q", code, out)
	}
	code, out, _ = runTestCLI(append([]string{"purge", "--url", "/blog/x"}, flags...), nil)
	if code != 0 || out != "purged: false\n" {
		t.Fatalf("purge --url again = %d %q", code, out)
	}
	e.put("/c")
	// Address and token from the environment, through the real entry point.
	var o, eo bytes.Buffer
	env := map[string]string{"PRISM_ADMIN_ADDR": e.admin.URL, "PRISM_ADMIN_TOKEN": cliTestToken}
	code = runCLI([]string{"purge", "--all"}, &o, &eo, func(k string) string { return env[k] })
	if code != 0 || o.String() != "purged_count: 1\n" {
		t.Fatalf("purge --all = %d %q %q", code, o.String(), eo.String())
	}

	t.Run("wrong token", func(t *testing.T) {
		code, _, stderr := runTestCLI([]string{"purge", "--all", "--admin", addr, "--token", "bad"}, nil)
		if code != exitFail || !strings.Contains(stderr, "401") {
			t.Fatalf("exit %d stderr %q, want 1 and a 401", code, stderr)
		}
	})
	t.Run("flag beats env", func(t *testing.T) {
		env := map[string]string{"PRISM_ADMIN_ADDR": "127.0.0.1:1", "PRISM_ADMIN_TOKEN": "bad"}
		if code, _, stderr := runTestCLI(append([]string{"purge", "--all"}, flags...), env); code != 0 {
			t.Fatalf("exit %d %q", code, stderr)
		}
	})
	t.Run("bad pattern", func(t *testing.T) {
		code, _, stderr := runTestCLI(append([]string{"purge", "--pattern", "/{a"}, flags...), nil)
		if code != exitFail || !strings.Contains(stderr, "400") {
			t.Fatalf("exit %d stderr %q", code, stderr)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		code, _, _ := runTestCLI([]string{"purge", "--all", "--admin", "127.0.0.1:1", "--timeout", "2s"}, nil)
		if code != exitFail {
			t.Fatalf("exit %d, want 1", code)
		}
	})
	t.Run("config file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "prism.toml")
		cfg := fmt.Sprintf(`[admin]
address = %q
bearer_token = %q

[cache]
dir = %q

[[hosts]]
id = 1
name = "example.com"
origin = "http://127.0.0.1:3000"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot"]
`, addr, cliTestToken, t.TempDir())
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := runTestCLI([]string{"purge", "--all", "--config", path}, nil)
		if code != 0 || out != "purged_count: 0\n" {
			t.Fatalf("purge with --config = %d %q %q", code, out, stderr)
		}
	})
}

func TestCLIWarmup(t *testing.T) {
	e := newCLIEnv(t)
	flags := []string{"--admin", e.admin.URL, "--token", cliTestToken}

	code, out, stderr := runTestCLI(append([]string{"warmup", "--status"}, flags...), nil)
	if code != 0 || !strings.HasPrefix(out, "warmup idle:") {
		t.Fatalf("warmup --status = %d %q %q", code, out, stderr)
	}
	code, out, stderr = runTestCLI(append([]string{"warmup", "--sitemap", "https://example.com/sitemap.xml", "--wait"}, flags...), nil)
	if code != 0 || !strings.Contains(out, "warmup completed: 2/2 processed, 0 errors") {
		t.Fatalf("warmup --wait = %d %q %q", code, out, stderr)
	}
	if !e.has("/a") || !e.has("/b") {
		t.Fatalf("warmed pages not cached")
	}

	e.failURL.Store("/b")
	code, out, _ = runTestCLI(append([]string{"warmup", "--sitemap", "https://example.com/sitemap.xml", "--wait"}, flags...), nil)
	if code != exitFail || !strings.Contains(out, "warmup completed: 2/2 processed, 1 errors") {
		t.Fatalf("warmup with a failing page = %d %q, want exit 1", code, out)
	}
	if !strings.Contains(out, "\n  failed: https://example.com/b (desktop): render failed\n") || strings.Contains(out, "/a (desktop)") {
		t.Fatalf("warmup --wait printed %q, want the failed URL with its reason", out)
	}

	code, _, stderr = runTestCLI(append([]string{"warmup", "--sitemap", "https://example.com/missing.xml", "--wait"}, flags...), nil)
	if code != exitFail {
		t.Fatalf("warmup of a missing sitemap = %d %q, want 1", code, stderr)
	}
	code, _, stderr = runTestCLI(append([]string{"warmup", "--sitemap", "https://evil.com/sitemap.xml"}, flags...), nil)
	if code != exitFail || !strings.Contains(stderr, "400") {
		t.Fatalf("off-host warmup = %d %q", code, stderr)
	}
	code, _, stderr = runTestCLI(append([]string{"warmup", "--cancel"}, flags...), nil)
	if code != exitFail || !strings.Contains(stderr, "409") {
		t.Fatalf("cancel with nothing running = %d %q", code, stderr)
	}
}

func TestAdminBaseURL(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:4001":        "http://127.0.0.1:4001",
		":4001":                 "http://127.0.0.1:4001",
		"0.0.0.0:4001":          "http://127.0.0.1:4001",
		"[::]:4001":             "http://[::1]:4001",
		"localhost:9":           "http://localhost:9",
		"http://10.0.0.1:4001/": "http://10.0.0.1:4001",
		"https://admin.example": "https://admin.example",
	}
	for in, want := range tests {
		if got, err := adminBaseURL(in); err != nil || got != want {
			t.Errorf("adminBaseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"nohost", "http://", "127.0.0.1"} {
		if _, err := adminBaseURL(bad); err == nil {
			t.Errorf("adminBaseURL(%q): no error", bad)
		}
	}
}

// TestCLIPurgeInCluster: the CLI reports how many live nodes applied a
// purge and exits 1 when not all of them did in time, or when Redis was
// unreachable and the purge is pending.
func TestCLIPurgeInCluster(t *testing.T) {
	var answer atomic.Value
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer.Load().(string))
	}))
	t.Cleanup(admin.Close)
	flags := []string{"--admin", admin.URL, "--token", cliTestToken}
	for _, tc := range []struct {
		args           []string
		answer         string
		code           int
		stdout, stderr string
	}{
		{[]string{"--url", "/a"}, `{"purged":true,"nodes_applied":3,"nodes_live":3,"pending":false}`, 0, "purged: true\nnodes_applied: 3 of 3 live\n", ""},
		{[]string{"--pattern", "/a/*"}, `{"purged_count":4,"nodes_applied":2,"nodes_live":3,"pending":false}`, 1, "purged_count: 4\nnodes_applied: 2 of 3 live\n", "1 of 3 live nodes did not confirm"},
		{[]string{"--all"}, `{"purged_count":7,"nodes_applied":1,"nodes_live":1,"pending":true}`, 1, "purged_count: 7\nnodes_applied: 1 of 1 live\n", "Redis is unreachable"},
		{[]string{"--all"}, `{"purged_count":7}`, 0, "purged_count: 7\n", ""}, // a single node
	} {
		answer.Store(tc.answer)
		code, out, stderr := runTestCLI(append(append([]string{"purge"}, tc.args...), flags...), nil)
		if code != tc.code || out != tc.stdout || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("purge %v answered %s: exit %d, stdout %q, stderr %q; want %d, %q, %q",
				tc.args, tc.answer, code, out, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
}

func TestCLIWarmupFailures(t *testing.T) {
	var st warmupState
	if err := json.Unmarshal([]byte(`{"status":"completed","total":300,"processed":300,"errors":150,
		"failed_urls":[{"url":"https://example.com/x","dimension":"mobile","status":503,"reason":"fill: page rendered with a server error status"},
		{"url":"https://evil.com/\u001b[2Jboom","reason":"not on a configured host\r\nFAKE LINE"}],
		"truncated":true}`), &st); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	st.printFailures(&b)
	want := "  failed: https://example.com/x (mobile) status 503: fill: page rendered with a server error status\n" +
		"  failed: https://evil.com/?[2Jboom: not on a configured host??FAKE LINE\n" +
		"  ... and 148 more failed (see the server log)\n" +
		"  truncated: the sitemaps list more URLs than warmup.max_urls\n"
	if b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	warmupState{Status: "completed", Errors: 0}.printFailures(&b)
	if b.Len() != 0 {
		t.Errorf("a warmup without failures printed %q", b.String())
	}
}

package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// adminOrigin is a test site that serves sitemaps (a plain one, and an index
// with a gzip-compressed child) besides JS pages for every other path.
func adminOrigin(t *testing.T) *httptest.Server {
	urlset := func(paths ...string) string {
		var b strings.Builder
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">`)
		for _, p := range paths {
			fmt.Fprintf(&b, "<url><loc>https://%s%s</loc></url>", siteHost, p)
		}
		return b.String() + "</urlset>"
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, urlset("/w/c", "/w/a"))
	zw.Close()
	docs := map[string]string{
		"/sitemap.xml": urlset("/s/1", "/s/2"),
		"/sitemap-index.xml": `<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">` +
			`<sitemap><loc>https://` + siteHost + `/sm-plain.xml</loc></sitemap>` +
			`<sitemap><loc>https://` + siteHost + `/sm-child.xml.gz</loc></sitemap></sitemapindex>`,
		"/sm-plain.xml": urlset("/w/a", "/w/b"),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, ok := docs[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, d)
			return
		}
		if r.URL.Path == "/sm-child.xml.gz" {
			w.Header().Set("Content-Type", "application/gzip")
			w.Write(gz.Bytes())
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, pageJS, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// admin sends one admin API request and decodes the JSON answer.
func (p *Prism) admin(method, path, body, token string) (int, map[string]any) {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.AdminURL+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 90 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if path != "/metrics" {
		if err := json.Unmarshal(b, &m); err != nil {
			p.t.Fatalf("%s %s = %d, body %q is not JSON", method, path, resp.StatusCode, b)
		}
	} else {
		m = map[string]any{"text": string(b)}
	}
	return resp.StatusCode, m
}

// cacheState is the X-Prism-Cache a bot request for path gets.
func (p *Prism) cacheState(path, ua string) string {
	p.t.Helper()
	r := p.Get(path, ua)
	if r.Status != http.StatusOK {
		p.t.Fatalf("GET %s = %d", path, r.Status)
	}
	return r.Header.Get("X-Prism-Cache")
}

func (p *Prism) waitWarmup(limit time.Duration, token string) map[string]any {
	p.t.Helper()
	var st map[string]any
	waitFor(p.t, limit, "warmup completed", func() bool {
		_, st = p.admin("GET", "/warmup/status", "", token)
		return st["status"] == "completed"
	})
	return st
}

func TestAdminAPI(t *testing.T) {
	origin := adminOrigin(t)
	c := newConf(t, origin.URL)
	p := startPrism(t, c)
	tok := c.AdminToken

	t.Run("auth", func(t *testing.T) {
		if code, m := p.admin("GET", "/health", "", ""); code != 200 || m["status"] != "ok" {
			t.Errorf("/health = %d %v", code, m)
		}
		for _, bad := range []string{"", "wrong"} {
			if code, m := p.admin("GET", "/status", "", bad); code != 401 || m["error"] == nil {
				t.Errorf("/status with token %q = %d %v, want 401", bad, code, m)
			}
			if code, _ := p.admin("POST", "/purge/all", "", bad); code != 401 {
				t.Errorf("/purge/all with token %q = %d, want 401", bad, code)
			}
		}
		if code, m := p.admin("GET", "/nope", "", tok); code != 404 || m["error"] == nil {
			t.Errorf("unknown path = %d %v", code, m)
		}
		big := `{"url":"/` + strings.Repeat("x", 2<<20) + `"}`
		if code, _ := p.admin("POST", "/render", big, tok); code != http.StatusRequestEntityTooLarge {
			t.Errorf("2 MB body = %d, want 413", code)
		}
	})

	t.Run("status and metrics", func(t *testing.T) {
		code, m := p.admin("GET", "/status", "", tok)
		if code != 200 {
			t.Fatalf("/status = %d %v", code, m)
		}
		for _, k := range []string{"uptime_secs", "cache", "pool", "renders"} {
			if _, ok := m[k]; !ok {
				t.Errorf("/status lacks %q: %v", k, m)
			}
		}
		if pool, _ := m["pool"].(map[string]any); pool["size"] != float64(c.Tabs) {
			t.Errorf("/status pool = %v, want size %d", m["pool"], c.Tabs)
		}
		_, mt := p.admin("GET", "/metrics", "", tok)
		if !strings.Contains(mt["text"].(string), "prism_") {
			t.Errorf("/metrics has no prism_ metrics:\n%.500s", mt["text"])
		}
	})

	t.Run("render then HIT, purge then MISS", func(t *testing.T) {
		code, m := p.admin("POST", "/render", `{"url":"/forced","dimension":"desktop"}`, tok)
		if code != 200 || m["status"] != "ok" || m["cache_status"] != "MISS" || m["html_bytes"].(float64) <= 0 {
			t.Fatalf("/render = %d %v", code, m)
		}
		if got := p.cacheState("/forced", desktopBot); got != "HIT" {
			t.Errorf("bot after /render: X-Prism-Cache %q, want HIT", got)
		}
		if code, m := p.admin("POST", "/render", `{"url":"https://`+siteHost+`/forced","dimension":1}`, tok); code != 200 || m["cache_status"] != "HIT" {
			t.Errorf("second /render = %d %v, want cache_status HIT", code, m)
		}
		// The default dimension is the host's first (mobile here).
		if code, m := p.admin("POST", "/render", `{"url":"/forced-mobile"}`, tok); code != 200 {
			t.Fatalf("/render default dimension = %d %v", code, m)
		}
		if got := p.cacheState("/forced-mobile", mobileBot); got != "HIT" {
			t.Errorf("mobile bot after /render: %q, want HIT", got)
		}
		for _, bad := range []string{`{"url":"/../../etc/passwd"}`, `{"url":"/%2e%2e/x"}`, `{"url":"https://other.test/a"}`, `{"url":"/a","dimension":"tablet"}`} {
			if code, m := p.admin("POST", "/render", bad, tok); code != 400 {
				t.Errorf("/render %s = %d %v, want 400", bad, code, m)
			}
		}

		if code, m := p.admin("POST", "/purge/url", `{"url":"/forced"}`, tok); code != 200 || m["purged"] != true {
			t.Fatalf("/purge/url = %d %v", code, m)
		}
		if code, m := p.admin("POST", "/purge/url", `{"url":"/forced"}`, tok); code != 200 || m["purged"] != false {
			t.Errorf("second /purge/url = %d %v, want purged false", code, m)
		}
		if got := p.cacheState("/forced", desktopBot); got != "MISS" {
			t.Errorf("bot after purge: %q, want MISS (rendered again)", got)
		}

		p.cacheState("/p/1", desktopBot)
		p.cacheState("/p/2", mobileBot)
		p.cacheState("/p/2/deep", desktopBot)
		if code, m := p.admin("POST", "/purge/pattern", `{"pattern":"/p/*"}`, tok); code != 200 || m["purged_count"] != float64(2) {
			t.Errorf("/purge/pattern = %d %v, want purged_count 2", code, m)
		}
		if got := p.cacheState("/p/1", desktopBot); got != "MISS" {
			t.Errorf("/p/1 after pattern purge: %q, want MISS", got)
		}
		if got := p.cacheState("/p/2/deep", desktopBot); got != "HIT" {
			t.Errorf("/p/2/deep after /p/* purge: %q, want HIT", got)
		}
		if code, m := p.admin("POST", "/purge/pattern", `{"pattern":"/p/{"}`, tok); code != 400 {
			t.Errorf("bad pattern = %d %v, want 400", code, m)
		}
	})

	t.Run("warmup of an index with a gzip child", func(t *testing.T) {
		if code, m := p.admin("POST", "/warmup", `{"sitemap_url":"http://127.0.0.1:1/sitemap.xml"}`, tok); code != 400 {
			t.Errorf("off-host warmup = %d %v, want 400", code, m)
		}
		code, m := p.admin("POST", "/warmup", `{"sitemap_url":"https://`+siteHost+`/sitemap-index.xml"}`, tok)
		if code != http.StatusAccepted || m["status"] != "warmup started" {
			t.Fatalf("/warmup = %d %v", code, m)
		}
		if code, _ := p.admin("POST", "/warmup", `{"sitemap_url":"https://`+siteHost+`/sitemap-index.xml"}`, tok); code != http.StatusConflict {
			// The warmup may, rarely, already be over; only a running one must conflict.
			if _, st := p.admin("GET", "/warmup/status", "", tok); st["status"] == "running" {
				t.Errorf("second /warmup while running = %d, want 409", code)
			}
		}
		st := p.waitWarmup(3*time.Minute, tok)
		// 3 distinct URLs (/w/a is in both children) x 2 dimensions.
		if st["total"] != float64(6) || st["processed"] != float64(6) || st["errors"] != float64(0) || st["error_message"] != nil {
			t.Fatalf("warmup status = %v, want 6/6 without errors", st)
		}
		for _, path := range []string{"/w/a", "/w/b", "/w/c"} {
			for _, ua := range []string{desktopBot, mobileBot} {
				if got := p.cacheState(path, ua); got != "HIT" {
					t.Errorf("%s after warmup: %q, want HIT", path, got)
				}
			}
		}
	})

	t.Run("CLI against the live server", func(t *testing.T) {
		cli := func(args ...string) (int, string) {
			t.Helper()
			cmd := exec.Command(prismBin, append(args, "--admin", p.Conf.Admin, "--token", tok)...)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("prism %v: %v", args, err)
			}
			return code, string(out)
		}
		code, out := cli("warmup", "--sitemap", "https://"+siteHost+"/sitemap.xml", "--wait")
		if code != 0 || !strings.Contains(out, "warmup completed: 4/4 processed, 0 errors") {
			t.Fatalf("prism warmup --wait = %d:\n%s", code, out)
		}
		if got := p.cacheState("/s/1", desktopBot); got != "HIT" {
			t.Errorf("/s/1 after CLI warmup: %q, want HIT", got)
		}
		code, out = cli("purge", "--pattern", "/s/*")
		if code != 0 || strings.TrimSpace(out) != "purged_count: 4" {
			t.Fatalf("prism purge --pattern = %d %q", code, out)
		}
		if got := p.cacheState("/s/2", mobileBot); got != "MISS" {
			t.Errorf("/s/2 after CLI purge: %q, want MISS", got)
		}
		code, out = cli("purge", "--url", "/s/2")
		if code != 0 || strings.TrimSpace(out) != "purged: true" {
			t.Errorf("prism purge --url = %d %q", code, out)
		}
		code, out = cli("purge", "--all")
		if code != 0 || !strings.HasPrefix(out, "purged_count: ") {
			t.Errorf("prism purge --all = %d %q", code, out)
		}
		if code, out := cli("warmup", "--sitemap", "https://other.test/sitemap.xml"); code != 1 || !strings.Contains(out, "400") {
			t.Errorf("prism warmup off-host = %d %q, want exit 1 with a 400", code, out)
		}
	})
}

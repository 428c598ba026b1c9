package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const uaGooglebotLogs = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

// TestLogsErrorPage: a crawler's 5xx page is a WARN fallback line with the
// client, the User-Agent, render_ms and total_ms, and the tab it rendered
// on resets without a "tab reset failed" warning.
func TestLogsErrorPage(t *testing.T) {
	o := newOrigin(t)
	for _, status := range []int{500, 502, 503} {
		o.Mux.HandleFunc(fmt.Sprintf("/err%d", status), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(status)
			fmt.Fprintf(w, pageJS, "error page")
		})
	}
	c := newConf(t, o.URL)
	c.Tabs = 1
	p := startPrism(t, c)
	for _, path := range []string{"/err500", "/err502", "/ok1", "/err503", "/err500", "/ok2"} {
		r := p.Get(path, uaGooglebotLogs)
		if strings.HasPrefix(path, "/err") && r.Header.Get("X-Prism-Cache") != "BYPASS" {
			t.Errorf("%s: X-Prism-Cache %q, want BYPASS", path, r.Header.Get("X-Prism-Cache"))
		}
	}
	// One tab: the last render began after every earlier reset ended.
	p.Get("/ok3", uaGooglebotLogs)
	logPath := filepath.Join(c.Dir, "prism.log")
	var log string
	waitFor(t, 10*time.Second, "the /ok3 line", func() bool {
		b, _ := os.ReadFile(logPath)
		log = string(b)
		return strings.Contains(log, "path=/ok3")
	})
	if strings.Contains(log, "tab reset failed") {
		t.Errorf("tab reset failed after an error page:\n%s", log)
	}
	var found bool
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="proxy: bot"`) || !strings.Contains(line, "path=/err500") {
			continue
		}
		found = true
		for _, want := range []string{"level=WARN", "cache=BYPASS", "client=127.0.0.1", `ua="` + uaGooglebotLogs + `"`, "render_ms=", "total_ms=", "err="} {
			if !strings.Contains(line, want) {
				t.Errorf("bot line lacks %s: %s", want, line)
			}
		}
	}
	if !found {
		t.Errorf("no bot line for /err500:\n%s", log)
	}
}

// TestWarmupRobotsCLI: `prism warmup --sitemap <site root> --wait` against
// the binary warms the sitemaps robots.txt lists (paced by [warmup]) and
// prints the URLs that failed, with their status.
func TestWarmupRobotsCLI(t *testing.T) {
	o := newOrigin(t)
	o.Mux.HandleFunc("/robots.txt", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "User-agent: *\nSitemap: https://%[1]s/sm-a.xml\nSitemap: https://evil.example/sm.xml\nsitemap: https://www.%[1]s/sm-b.xml\n", siteHost)
	})
	urlset := func(locs ...string) string {
		s := `<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">`
		for _, l := range locs {
			s += "<url><loc>https://" + siteHost + l + "</loc></url>"
		}
		return s + "</urlset>"
	}
	o.Mux.HandleFunc("/sm-a.xml", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, urlset("/r/1", "/r/2")) })
	o.Mux.HandleFunc("/sm-b.xml", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, urlset("/r/3", "/r/down")) })
	o.Mux.HandleFunc("/r/down", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(503)
		fmt.Fprint(w, "<html><body>maintenance</body></html>")
	})
	c := newConf(t, o.URL)
	c.Extra = "[warmup]\nconcurrency = 2\nrate = 20\nmax_urls = 100\n"
	c.Reservation = 0
	c.MaxAttempts = 1 // a failed render is not retried (the first retry waits 30s)
	p := startPrism(t, c)
	cmd := exec.Command(prismBin, "warmup", "--sitemap", "https://"+siteHost+"/", "--wait", "--admin", p.Conf.Admin, "--token", c.AdminToken)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("prism warmup --wait = %v, want exit 1 (a URL failed):\n%s", err, out)
	}
	for _, want := range []string{
		"warmup completed: 8/8 processed, 2 errors",
		"failed: https://" + siteHost + "/r/down (mobile) status 503:",
		"failed: https://" + siteHost + "/r/down (desktop) status 503:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, path := range []string{"/r/1", "/r/2", "/r/3"} {
		if r := p.Get(path, uaGooglebotLogs); r.Header.Get("X-Prism-Cache") != "HIT" {
			t.Errorf("%s after warmup: %q, want HIT", path, r.Header.Get("X-Prism-Cache"))
		}
	}
}

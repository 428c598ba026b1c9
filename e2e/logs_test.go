package e2e

import (
	"fmt"
	"net/http"
	"os"
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

package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/traps"
)

// TestDoneDetection renders, through the binary, every page of
// internal/traps: the ones whose content arrives after the load in the
// ways pages do it (fetch chains, timers, idle callbacks, web fonts,
// workers, late scripts, frames, scheduler tasks, shadow roots) are
// served complete and logged ended=idle; the ones that never stop are
// served complete without waiting for the render timeout.
func TestDoneDetection(t *testing.T) {
	o := newOrigin(t)
	endless := traps.Endless("__prismDone")
	for _, prefix := range []string{"/trap/", "/endless/", "/slow/"} {
		o.Mux.HandleFunc(prefix, func(w http.ResponseWriter, r *http.Request) {
			if !traps.Serve(w, r, traps.Early, traps.Fonts, endless) {
				http.NotFound(w, r)
			}
		})
	}
	c := newConf(t, o.URL)
	c.Timeout = "4s"
	c.RenderExtra = `block_resource_types = ["Image", "Media"]` // fonts load
	p := startPrism(t, c)

	check := func(path string) {
		t.Helper()
		r := p.Get(path, desktopBot)
		if r.Status != http.StatusOK || r.Header.Get("X-Prism-Cache") != "MISS" {
			t.Errorf("%s: status %d, X-Prism-Cache %q: want a 200 render", path, r.Status, r.Header.Get("X-Prism-Cache"))
			return
		}
		if !strings.Contains(r.Body, traps.Marker) {
			t.Errorf("%s: captured before the page was done:\n%s", path, r.Body)
		}
		if strings.Contains(r.Body, traps.Never) {
			t.Errorf("%s: a timer the page cleared ran:\n%s", path, r.Body)
		}
		if r.Header.Get("X-Prism-Partial") != "" {
			t.Errorf("%s: served as partial (the render timeout)", path)
		}
	}
	var idle []string
	for _, m := range []map[string]string{traps.Early, traps.Fonts} {
		for path := range m {
			check(path)
			idle = append(idle, path)
		}
	}
	for path := range endless {
		if path == "/endless/hanging-fetch" {
			continue // held to the timeout by design (prerender's unit tests)
		}
		check(path)
	}

	// Every trap page's bot line says the page's signals ended it.
	logPath := filepath.Join(c.Dir, "prism.log")
	var log string
	waitFor(t, 10*time.Second, "the bot lines", func() bool {
		b, _ := os.ReadFile(logPath)
		log = string(b)
		for _, path := range idle {
			if !strings.Contains(log, "path="+path+" ") {
				return false
			}
		}
		return true
	})
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="proxy: bot"`) || !strings.Contains(line, "path=/trap/") {
			continue
		}
		if !strings.Contains(line, "ended=idle") || !strings.Contains(line, "settle_ms=") {
			t.Errorf("a trap page not ended by its signals: %s", line)
		}
	}
}

// TestWarmUpPath: before it serves, every tab has rendered
// render.warm_up_path from the origin (as a render: X-Prism-Render), and
// nothing of it was cached: a crawler's first request for it is a miss.
func TestWarmUpPath(t *testing.T) {
	o := newOrigin(t)
	o.Mux.HandleFunc("/warm-me", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!DOCTYPE html><html><body><div id="a"></div><script>document.getElementById('a').textContent = 'warmed'</script></body></html>`))
	})
	c := newConf(t, o.URL)
	c.Tabs = 2
	c.RenderExtra = `warm_up_path = "/warm-me?x=1"`
	p := startPrism(t, c)
	if n := o.Renders("/warm-me"); n != 2 {
		t.Errorf("warm-up renders of the warm-up path at the origin: %d, want one per tab (2)", n)
	}
	r := p.Get("/warm-me?x=1", desktopBot)
	if r.Status != http.StatusOK || r.Header.Get("X-Prism-Cache") != "MISS" || !strings.Contains(r.Body, "warmed") {
		t.Errorf("first crawler request: status %d, X-Prism-Cache %q, want a 200 MISS render:\n%s", r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
	}
}

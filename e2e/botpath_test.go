package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBotPath runs the bot path's behaviours against one shared instance.
func TestBotPath(t *testing.T) {
	origin := newOrigin(t)
	p := startPrism(t, newConf(t, origin.URL))

	t.Run("bot gets rendered page, person gets origin page", func(t *testing.T) {
		bot := p.Get("/home", desktopBot)
		if bot.Status != http.StatusOK {
			t.Fatalf("bot status = %d, want 200", bot.Status)
		}
		contains(t, "bot", bot.Body, "Rendered by JS: /home", "<!DOCTYPE html>")
		if strings.Contains(bot.Body, "<script>") {
			t.Errorf("bot body still holds inline scripts:\n%s", bot.Body)
		}
		if got := bot.Header.Get("X-Prism-Dimension"); got != "desktop" {
			t.Errorf("X-Prism-Dimension = %q, want desktop", got)
		}
		human := p.Get("/home", person)
		contains(t, "person", human.Body, `<div id="app">Loading</div>`, "<script>")
		if got := human.Header.Get("X-Prism-Cache"); got != "" {
			t.Errorf("person got X-Prism-Cache %q, want none", got)
		}
	})

	t.Run("MISS then HIT with identical bodies", func(t *testing.T) {
		first := p.Get("/catalog?b=2&a=1&utm_source=x", desktopBot)
		second := p.Get("/catalog?a=1&b=2", desktopBot)
		if got := first.Header.Get("X-Prism-Cache"); got != "MISS" {
			t.Errorf("first X-Prism-Cache = %q, want MISS", got)
		}
		if got := second.Header.Get("X-Prism-Cache"); got != "HIT" {
			t.Errorf("second X-Prism-Cache = %q, want HIT", got)
		}
		if first.Body != second.Body {
			t.Errorf("bodies differ:\nMISS: %s\nHIT:  %s", first.Body, second.Body)
		}
		gz := p.Get("/catalog?a=1&b=2", desktopBot, "Accept-Encoding: gzip")
		if gz.Header.Get("Content-Encoding") != "gzip" || gz.Body != first.Body {
			t.Errorf("gzip HIT: encoding %q, same body %v", gz.Header.Get("Content-Encoding"), gz.Body == first.Body)
		}
		etag := second.Header.Get("ETag")
		if etag == "" {
			t.Fatal("HIT carries no ETag")
		}
		if nm := p.Get("/catalog?a=1&b=2", desktopBot, "If-None-Match: "+etag); nm.Status != http.StatusNotModified {
			t.Errorf("If-None-Match status = %d, want 304", nm.Status)
		}
	})

	t.Run("desktop and mobile rendered and cached apart", func(t *testing.T) {
		d := p.Get("/viewport", desktopBot)
		m := p.Get("/viewport", mobileBot)
		contains(t, "desktop", d.Body, "width=1366")
		contains(t, "mobile", m.Body, "width=412")
		if got := m.Header.Get("X-Prism-Dimension"); got != "mobile" {
			t.Errorf("mobile X-Prism-Dimension = %q", got)
		}
		if got := m.Header.Get("X-Prism-Cache"); got != "MISS" {
			t.Errorf("mobile after desktop X-Prism-Cache = %q, want MISS (cached apart)", got)
		}
		if got := p.Get("/viewport", mobileBot).Header.Get("X-Prism-Cache"); got != "HIT" {
			t.Errorf("mobile second X-Prism-Cache = %q, want HIT", got)
		}
	})

	t.Run("prerenderReady content after 1.5s captured", func(t *testing.T) {
		r := p.Get("/ready", desktopBot)
		contains(t, "ready", r.Body, "late content arrived")
	})

	t.Run("status codes reach the bot", func(t *testing.T) {
		if r := p.Get("/meta404", desktopBot); r.Status != http.StatusNotFound {
			t.Errorf("meta 404: status %d, want 404", r.Status)
		} else {
			contains(t, "meta404", r.Body, "product not found")
		}
		if r := p.Get("/missing", desktopBot); r.Status != http.StatusNotFound {
			t.Errorf("origin 404: status %d, want 404", r.Status)
		}
		r := p.Get("/moved", desktopBot)
		if r.Status != http.StatusMovedPermanently {
			t.Errorf("origin 301: status %d, want 301", r.Status)
		}
		if loc := r.Header.Get("Location"); !strings.HasSuffix(loc, "/new-home") {
			t.Errorf("origin 301: Location %q, want .../new-home", loc)
		}
		if n := origin.Hits("/new-home"); n != 0 {
			t.Errorf("redirect target fetched %d times, want 0 (not followed)", n)
		}
	})

	t.Run("scripts stripped, ld+json kept", func(t *testing.T) {
		r := p.Get("/scripts", desktopBot)
		contains(t, "scripts", r.Body, "scripted body", `application/ld+json`, `"@type":"Product"`)
		if strings.Contains(r.Body, "app.js") || strings.Contains(r.Body, "textContent") {
			t.Errorf("scripts left in body:\n%s", r.Body)
		}
	})

	t.Run("eight concurrent misses, one origin fetch", func(t *testing.T) {
		const path = "/concurrent"
		var wg sync.WaitGroup
		results := make([]Response, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = p.Get(path, desktopBot)
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.Status != http.StatusOK || !strings.Contains(r.Body, "Rendered by JS: "+path) {
				t.Errorf("request %d: status %d body %.200s", i, r.Status, r.Body)
			}
		}
		if n := origin.Hits(path); n != 1 {
			t.Errorf("origin document fetches = %d, want 1", n)
		}
	})
}

// TestRestartAndShutdown checks the disk tier across a restart and that
// SIGTERM drains in time and leaves no browser behind.
func TestRestartAndShutdown(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	p := startPrism(t, conf)
	first := p.Get("/persist", desktopBot)
	if first.Header.Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("first request X-Prism-Cache = %q, want MISS", first.Header.Get("X-Prism-Cache"))
	}
	browsers := browserPids(p.Pid())
	if len(browsers) == 0 {
		t.Fatal("no Chromium process found below prism")
	}
	err, took := p.Stop()
	if err != nil {
		t.Fatalf("SIGTERM exit: %v, want exit 0", err)
	}
	if took > 10*time.Second {
		t.Errorf("SIGTERM exit took %v, want < 10s", took)
	}
	waitFor(t, 5*time.Second, "browser processes to exit", func() bool {
		for _, pid := range browsers {
			if alive(pid) {
				return false
			}
		}
		return true
	})

	// Nothing anywhere still runs on this instance's browser profile, and
	// the profile itself is gone.
	if pids := processesMentioning(filepath.Join(conf.Dir, "chrome")); len(pids) > 0 {
		t.Errorf("processes still using the browser profile after SIGTERM: %v", pids)
	}
	if left, _ := os.ReadDir(filepath.Join(conf.Dir, "chrome")); len(left) > 0 {
		t.Errorf("browser profile left behind: %v", left)
	}

	hits := origin.Hits("/persist")
	p2 := startPrism(t, conf)
	again := p2.Get("/persist", desktopBot)
	if got := again.Header.Get("X-Prism-Cache"); got != "HIT" {
		t.Errorf("after restart X-Prism-Cache = %q, want HIT", got)
	}
	if again.Body != first.Body {
		t.Errorf("body after restart differs")
	}
	if n := origin.Hits("/persist"); n != hits {
		t.Errorf("origin fetched /persist %d more times after restart, want 0", n-hits)
	}
}

// TestKilledLeavesNoBrowser checks that SIGKILL of prism takes its browser down too.
func TestKilledLeavesNoBrowser(t *testing.T) {
	origin := newOrigin(t)
	p := startPrism(t, newConf(t, origin.URL))
	p.Get("/warm", desktopBot)
	browsers := browserPids(p.Pid())
	if len(browsers) == 0 {
		t.Fatal("no Chromium process found below prism")
	}
	p.Kill()
	waitFor(t, 10*time.Second, "browser processes to exit after SIGKILL", func() bool {
		for _, pid := range browsers {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// TestStaleRecachedInBackground: a stale hit is served at once and queues a
// recache, after which the page is fresh again without a crawler waiting.
func TestStaleRecachedInBackground(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	conf.TTL = "2s"
	p := startPrism(t, conf)
	first := p.Get("/aging", desktopBot)
	if first.Header.Get("X-Prism-Cache") != "MISS" {
		t.Fatalf("first: %s", first.Header.Get("X-Prism-Cache"))
	}
	waitFor(t, 10*time.Second, "a STALE answer", func() bool {
		return p.Get("/aging", desktopBot).Header.Get("X-Prism-Cache") == "STALE"
	})
	waitFor(t, 20*time.Second, "the background recache to make it a HIT", func() bool {
		return p.Get("/aging", desktopBot).Header.Get("X-Prism-Cache") == "HIT"
	})
	if n := origin.Hits("/aging"); n < 2 {
		t.Errorf("origin fetched /aging %d times, want >= 2 (the recache)", n)
	}
}

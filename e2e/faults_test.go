package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestBrowserKilledMidTraffic kills every Chromium process while crawlers
// keep asking: every answer is a 200 (rendered, stale or the origin's own
// page), and renders resume within seconds.
func TestBrowserKilledMidTraffic(t *testing.T) {
	origin := newOrigin(t)
	p := startPrism(t, newConf(t, origin.URL))
	p.Get("/cached", desktopBot)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	var served int
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && i < 200; i++ {
				path := "/cached"
				if i%2 == 1 {
					path = fmt.Sprintf("/during-%d-%d", w, i)
				}
				r := p.Get(path, desktopBot)
				mu.Lock()
				served++
				if r.Status != http.StatusOK {
					bad = append(bad, fmt.Sprintf("%s: %d %s", path, r.Status, r.Header.Get("X-Prism-Cache")))
				}
				mu.Unlock()
			}
		}()
	}
	pids := browserPids(p.Pid())
	if len(pids) == 0 {
		t.Fatal("no browser processes")
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Renders resume: a new page renders with its JavaScript content.
	waitFor(t, 30*time.Second, "renders to resume after the browser was killed", func() bool {
		r := p.Get(fmt.Sprintf("/after-%d", time.Now().UnixNano()), desktopBot)
		return r.Header.Get("X-Prism-Cache") == "MISS" && strings.Contains(r.Body, "Rendered by JS")
	})
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d answers were not 200: %v", len(bad), served, bad)
	}
	if r, _ := http.Get(p.AdminURL + "/health"); r == nil || r.StatusCode != http.StatusOK {
		t.Errorf("/health not 200 after recovery")
	}
}

// TestHangingPage checks a page that never goes quiet is answered within the
// render timeout plus a small margin.
func TestHangingPage(t *testing.T) {
	origin := newOrigin(t)
	origin.Mux.HandleFunc("/longpoll", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!DOCTYPE html><html><head><title>poll</title></head><body><p>polling page</p>
<script>function poll(){ fetch('/hang').then(poll, poll); } poll();</script></body></html>`)
	})
	origin.Mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	conf := newConf(t, origin.URL)
	conf.Timeout = "3s"
	p := startPrism(t, conf)
	start := time.Now()
	r := p.Get("/longpoll", desktopBot)
	took := time.Since(start)
	if took > 15*time.Second {
		t.Errorf("hanging page answered after %v, want about the 3s timeout (bound: 5x)", took)
	}
	if r.Status != http.StatusOK || !strings.Contains(r.Body, "polling page") {
		t.Errorf("hanging page: status %d, cache %s, body %.300s", r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
	}
}

// TestOriginDown checks stale copies are served while the origin is down
// and that a page never cached gets a plain 502/504, not a crash.
func TestOriginDown(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	conf.TTL = "1s"
	p := startPrism(t, conf)
	first := p.Get("/fragile", desktopBot)
	if !strings.Contains(first.Body, "Rendered by JS: /fragile") {
		t.Fatalf("first render: %.300s", first.Body)
	}
	origin.Close()
	var r Response
	waitFor(t, 10*time.Second, "the entry to go stale", func() bool {
		r = p.Get("/fragile", desktopBot)
		return r.Header.Get("X-Prism-Cache") == "STALE"
	})
	if r.Status != http.StatusOK || r.Body != first.Body {
		t.Errorf("stale copy: status %d, same body %v", r.Status, r.Body == first.Body)
	}
	never := p.Get("/never-cached", desktopBot)
	if never.Status != http.StatusBadGateway && never.Status != http.StatusGatewayTimeout {
		t.Errorf("uncached page with origin down: status %d, want 502 or 504", never.Status)
	}
	if r, _ := http.Get(p.AdminURL + "/health"); r == nil || r.StatusCode != http.StatusOK {
		t.Errorf("/health not 200 with the origin down")
	}
}

// cacheFiles lists the entry files under dir.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestDamagedCacheFiles truncates and overwrites entry files between runs:
// the next run serves correct pages, re-rendering what was damaged.
func TestDamagedCacheFiles(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	p := startPrism(t, conf)
	paths := []string{"/d1", "/d2", "/d3", "/d4"}
	for _, path := range paths {
		p.Get(path, desktopBot)
	}
	if err, _ := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	files := cacheFiles(t, filepath.Join(conf.Dir, "cache"))
	if len(files) < len(paths) {
		t.Fatalf("found %d cache files, want >= %d", len(files), len(paths))
	}
	damage := []func(string) error{
		func(f string) error { return os.Truncate(f, 10) },
		func(f string) error { return os.WriteFile(f, []byte("<html>garbage served?</html>"), 0o644) },
		func(f string) error {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0xff
			return os.WriteFile(f, b, 0o644)
		},
	}
	for i, fn := range damage {
		if err := fn(files[i]); err != nil {
			t.Fatal(err)
		}
	}
	p2 := startPrism(t, conf)
	for _, path := range paths {
		r := p2.Get(path, desktopBot)
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "Rendered by JS: "+path) || strings.Contains(r.Body, "garbage") {
			t.Errorf("%s after damage: status %d cache %s body %.200s", path, r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
		}
	}
}

// TestKilledUnderLoad SIGKILLs prism while it renders and stores: after a
// restart every page is whole (served from cache or rendered anew).
func TestKilledUnderLoad(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	p := startPrism(t, conf)
	var wg sync.WaitGroup
	const n = 12
	var done atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/load-%d", p.Public, i), nil)
			req.Host = siteHost
			req.Header.Set("User-Agent", desktopBot)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				done.Add(1)
			}
		}()
	}
	waitFor(t, 30*time.Second, "some renders to finish", func() bool { return done.Load() >= 3 })
	browsers := browserPids(p.Pid())
	p.Kill()
	wg.Wait()
	waitFor(t, 10*time.Second, "the killed prism's browser to exit", func() bool {
		for _, pid := range browsers {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	p2 := startPrism(t, conf)
	// The killed browser's profile is swept at start; only the new one is left.
	if left, _ := os.ReadDir(filepath.Join(conf.Dir, "chrome")); len(left) != 1 {
		t.Errorf("browser profiles after restart: %d, want 1 (the killed one swept)", len(left))
	}
	for i := range n {
		path := fmt.Sprintf("/load-%d", i)
		r := p2.Get(path, desktopBot)
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "Rendered by JS: "+path) || !strings.HasSuffix(strings.TrimSpace(r.Body), "</html>") {
			t.Errorf("%s after SIGKILL: status %d cache %s body %.200s", path, r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
		}
	}
}

// TestNoSSRFThroughPage renders a page that reaches for a loopback service
// and the cloud metadata address: neither receives a request.
func TestNoSSRFThroughPage(t *testing.T) {
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		fmt.Fprint(w, "secret")
	}))
	defer internal.Close()
	origin := newOrigin(t)
	origin.Mux.HandleFunc("/ssrf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!DOCTYPE html><html><head><title>ssrf</title>
<link rel="stylesheet" href="%[1]s/style.css"></head><body>
<iframe src="%[1]s/frame"></iframe><img src="%[1]s/img.png">
<p id="out">pending</p><script>
window.prerenderReady = false;
Promise.allSettled([
  fetch('%[1]s/secret').then(r => r.text()),
  fetch('http://169.254.169.254/latest/meta-data/').then(r => r.text()),
  fetch('http://localhost:%[2]s/secret').then(r => r.text()),
]).then(rs => {
  document.getElementById('out').textContent = rs.map(r => r.status + ':' + (r.value || '')).join(' ');
  window.prerenderReady = true;
});
</script></body></html>`, internal.URL, strings.TrimPrefix(internal.URL[strings.LastIndexByte(internal.URL, ':'):], ":"))
	})
	p := startPrism(t, newConf(t, origin.URL))
	r := p.Get("/ssrf", desktopBot)
	if strings.Contains(r.Body, "secret") && !strings.Contains(r.Body, "/secret") {
		t.Errorf("page read the internal service: %.500s", r.Body)
	}
	if !strings.Contains(r.Body, "rejected") {
		t.Errorf("fetches were not refused: %.500s", r.Body)
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("loopback service received %d requests, want 0", n)
	}
	// Nor can a request to PRISM make it fetch the loopback service.
	if r := p.Get("/", desktopBot, "Host: "+strings.TrimPrefix(internal.URL, "http://")); r.Status != http.StatusMisdirectedRequest {
		t.Errorf("unknown Host: status %d, want 421", r.Status)
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("loopback service received %d requests, want 0", n)
	}
}

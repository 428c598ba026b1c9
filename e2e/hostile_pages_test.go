package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// shopHost is a second configured host on the same origin as siteHost.
const shopHost = "shop." + siteHost

const shopHostTOML = `
[[hosts]]
id = 2
name = "` + shopHost + `"
origin = "{{ORIGIN}}"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot", "bingbot"]
  width = 1366
  height = 768
`

// Hostile pages, served by the origin of TestHostilePages.
var hostilePageBodies = map[string]string{
	// What a render sees of earlier ones: nothing, on every tab and host.
	"/clean": `<!DOCTYPE html><html><body><script>
document.body.insertAdjacentHTML('beforeend', '<p id="seen">cookie=[' + document.cookie + '] ls=[' + (localStorage.getItem('k') || '') + '] ss=[' + (sessionStorage.getItem('k') || '') + ']</p>');
</script></body></html>`,
	// Popups that script their opener: write into whatever document the tab
	// holds next, set its cookies, navigate it away on the other host.
	"/popup": `<!DOCTYPE html><html><body><p>popups</p><script>
let opened = 0;
const evil = "setInterval(() => { try {" +
	"opener.document.cookie = 'evil=1; path=/; max-age=3600'; opener.localStorage.setItem('k', 'evil');" +
	"if (opener.document.body && !opener.document.getElementById('evil')) opener.document.body.insertAdjacentHTML('beforeend', '<p id=evil>ATTACKER TEXT</p>');" +
	"} catch (e) {} try { if (opener.location.host !== '` + siteHost + `') opener.location.href = 'https://` + siteHost + `/attacker'; } catch (e) {} }, 1);";
for (let i = 0; i < 5; i++) { const w = window.open('about:blank', 'p' + i); if (w) { opened++; try { w.eval(evil); } catch (e) {} } }
window.open('/attacker', '_blank', 'noopener');
document.body.insertAdjacentHTML('beforeend', '<p>opened=' + opened + '</p>');
</script></body></html>`,
	"/attacker": `<!DOCTYPE html><html><body><p>ATTACKER PAGE</p></body></html>`,
	// A page that replaces what an in-page reset would use, then writes
	// state from every exit-time event and from timers.
	"/escape": `<!DOCTYPE html><html><body><script>
const put = (v) => { try { document.cookie = 'escaped=' + v + '; path=/; max-age=3600'; localStorage.setItem('k', 'escaped'); sessionStorage.setItem('k', 'escaped'); navigator.sendBeacon('/beacon?' + v); } catch (e) {} };
Symbol.for = () => Symbol('nope'); Array.prototype.splice = function () { return []; };
EventTarget.prototype.removeEventListener = function () {}; Function.prototype.call = function () {};
for (const ev of ['pagehide', 'unload', 'beforeunload', 'pageswap', 'freeze', 'resume']) { addEventListener(ev, () => put(ev), true); addEventListener(ev, () => put(ev)); }
onunload = () => put('onunload');
setInterval(() => put('timer'), 1);
document.body.insertAdjacentHTML('beforeend', '<p>escape ready</p>');
</script></body></html>`,
	"/flood-push": `<!DOCTYPE html><html><head><script>window.prerenderReady = false; let i = 0;
(function f() { for (let k = 0; k < 2000; k++) history.pushState({}, '', '/flood-push?' + (i++)); setTimeout(f, 0); })();
</script></head><body><p>push flood</p></body></html>`,
	"/flood-hash": `<!DOCTYPE html><html><head><script>window.prerenderReady = false; let i = 0;
(function f() { for (let k = 0; k < 2000; k++) location.hash = 'h' + (i++); setTimeout(f, 0); })();
</script></head><body><p>hash flood</p></body></html>`,
	"/dialogs": `<!DOCTYPE html><html><body><script>
alert('a'); const c = confirm('b'); const p = prompt('c', 'default');
addEventListener('beforeunload', (e) => { e.preventDefault(); e.returnValue = 'stay'; });
setTimeout(() => { alert('later'); document.body.insertAdjacentHTML('beforeend', '<p>after dialogs confirm=' + c + ' prompt=' + p + '</p>'); }, 50);
</script></body></html>`,
	// 100000 nested elements overflow the renderer's stack in layout.
	"/nest": `<!DOCTYPE html><html><body><script>
let el = document.body; for (let i = 0; i < 100000; i++) { const d = document.createElement('div'); el.appendChild(d); el = d; }
document.body.offsetHeight; document.body.insertAdjacentHTML('beforeend', '<p>survived</p>');
</script></body></html>`,
	"/big-fetch": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
let ok = 0, failed = 0;
Promise.all(Array.from({length: 30}, (_, i) => fetch('/big?' + i).then(r => r.arrayBuffer()).then(() => ok++, () => failed++))).then(() => {
	document.body.insertAdjacentHTML('beforeend', '<p>big ok=' + ok + ' failed=' + failed + '</p>'); window.prerenderReady = true; });
</script></head><body></body></html>`,
}

// rssBound is the resident memory PRISM must stay under while a page pulls
// 30 bodies of 19 MB at once (README "Hostile pages"): bodies past 1 MiB are
// streamed to the browser, never held, and render.max_page_mb (64) cuts
// the page off (measured: 16 MiB at peak, against 3 GB before the bounds
// and 260 MiB with whole bodies held within them).
const rssBound = 100 << 20

func TestHostilePages(t *testing.T) {
	origin := newOrigin(t)
	var mu sync.Mutex
	cookies := map[string][]string{} // path -> "host: Cookie" the origin received
	beacons := 0
	for path, body := range hostilePageBodies {
		origin.Mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if c := r.Header.Get("Cookie"); c != "" {
				mu.Lock()
				cookies[path] = append(cookies[path], r.Host+": "+c)
				mu.Unlock()
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, body)
		})
	}
	origin.Mux.HandleFunc("/beacon", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "timer" { // its own render's are the page's business
			mu.Lock()
			beacons++
			mu.Unlock()
		}
	})
	big := []byte(strings.Repeat("b", 19<<20))
	origin.Mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.Write(big)
	})
	c := newConf(t, origin.URL)
	c.Timeout = "5s"
	c.Extra = strings.ReplaceAll(shopHostTOML, "{{ORIGIN}}", origin.URL)
	p := startPrism(t, c)
	n := 0
	render := func(host, path string) Response {
		t.Helper()
		n++
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		return p.Get(path+sep+"n="+strconv.Itoa(n), desktopBot, "Host: "+host)
	}
	// checkClean renders /clean on both hosts, two at a time (one on each
	// tab), and fails on any trace of the attacker in the pages or in what
	// the origin received.
	checkClean := func(t *testing.T, after string) {
		t.Helper()
		for _, host := range []string{siteHost, shopHost, siteHost} {
			var wg sync.WaitGroup
			got := make([]Response, 2)
			for i := range got {
				n++
				path := "/clean?n=" + strconv.Itoa(n)
				wg.Go(func() { got[i] = do(t, http.MethodGet, p.Public+path, desktopBot, nil, "Host: "+host) })
			}
			wg.Wait()
			for _, r := range got {
				if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "MISS" || !strings.Contains(r.Body, "cookie=[] ls=[] ss=[]") ||
					strings.Contains(r.Body, "ATTACKER") {
					t.Errorf("after %s, %s: %d %s %.300s", after, host, r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(cookies["/clean"]) > 0 || beacons > 0 {
			t.Errorf("after %s: the origin received cookies %v and %d exit-time beacons", after, cookies["/clean"], beacons)
		}
	}

	t.Run("popups across hosts", func(t *testing.T) {
		for _, host := range []string{siteHost, shopHost} {
			r := render(host, "/popup")
			if r.Status != 200 || !strings.Contains(r.Body, "opened=0") {
				t.Errorf("%s /popup: %d %.300s (want popups blocked)", host, r.Status, r.Body)
			}
			checkClean(t, host+"/popup")
		}
		if n := origin.Hits("/attacker"); n != 0 {
			t.Errorf("the attacker's page was fetched %d times", n)
		}
	})
	t.Run("reset escape", func(t *testing.T) {
		for _, host := range []string{siteHost, shopHost} {
			if r := render(host, "/escape"); !strings.Contains(r.Body, "escape ready") {
				t.Errorf("%s /escape: %d %.300s", host, r.Status, r.Body)
			}
			checkClean(t, host+"/escape")
		}
	})
	t.Run("floods", func(t *testing.T) {
		for range 2 {
			for _, path := range []string{"/flood-push", "/flood-hash"} {
				if r := render(siteHost, path); r.Status != 200 || !strings.Contains(r.Body, "flood") {
					t.Errorf("%s: %d %.200s", path, r.Status, r.Body)
				}
			}
		}
		checkClean(t, "floods")
		if c, r := p.metric("prism_browser_crashes_total"), p.metric("prism_browser_restarts_total"); c != 0 || r != 0 {
			t.Errorf("floods took the browser down: %v crashes, %v restarts", c, r)
		}
	})
	t.Run("dialogs", func(t *testing.T) {
		start := time.Now()
		r := render(siteHost, "/dialogs")
		if r.Header.Get("X-Prism-Cache") != "MISS" || !strings.Contains(r.Body, "after dialogs confirm=false prompt=null") {
			t.Errorf("/dialogs: %d %s %.300s", r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("/dialogs took %v", d)
		}
		checkClean(t, "dialogs")
	})
	t.Run("renderer crash", func(t *testing.T) {
		start := time.Now()
		r := render(siteHost, "/nest")
		// The crash (about a second in) ends the render at once: the
		// crawler gets the origin's page before the 5s timeout would have
		// ended it.
		if d := time.Since(start); d >= 5*time.Second || r.Header.Get("X-Prism-Cache") != "BYPASS" {
			t.Errorf("/nest: %d %s after %v, want BYPASS before the 5s timeout", r.Status, r.Header.Get("X-Prism-Cache"), d)
		}
		if v := p.metric(`prism_render_total{outcome="crashed"}`); v < 1 {
			t.Errorf(`prism_render_total{outcome="crashed"} = %v`, v)
		}
		checkClean(t, "a renderer crash")
	})
	t.Run("large fetches", func(t *testing.T) {
		var peak int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				peak = max(peak, rssBytes(p.Pid()))
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		r := render(siteHost, "/big-fetch")
		close(stop)
		<-sampled
		t.Logf("30 fetches of 19 MB: %.120s; PRISM's peak RSS %d MiB", r.Body, peak>>20)
		if r.Status != 200 || r.Header.Get("X-Prism-Partial") != "1" || !strings.Contains(r.Body, "failed=") {
			t.Errorf("/big-fetch: %d partial=%q %.200s", r.Status, r.Header.Get("X-Prism-Partial"), r.Body)
		}
		if peak > rssBound {
			t.Errorf("PRISM's RSS peaked at %d MiB, bound %d MiB", peak>>20, rssBound>>20)
		}
		checkClean(t, "large fetches")
		if c := p.metric("prism_browser_restarts_total"); c != 0 {
			t.Errorf("%v browser restarts", c)
		}
	})
}

// lyingOrigin listens on loopback and breaks HTTP on purpose, by path:
// /status000 answers "HTTP/1.1 000", /short announces 1000 bytes and sends
// 10, /trickle sends a byte every 100 ms of the 100 it announces. Its
// connections end with the test.
func lyingOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				head := "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
				switch req.URL.Path {
				case "/status000":
					io.WriteString(c, "HTTP/1.1 000 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi")
				case "/short":
					io.WriteString(c, head+"Content-Length: 1000\r\n\r\n<html>0123")
				case "/trickle":
					io.WriteString(c, head+"Content-Length: 100\r\n\r\n")
					for range 100 {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond): // the origin's pace
						}
						if _, err := io.WriteString(c, "x"); err != nil {
							return
						}
					}
				}
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// TestLyingOrigin: every crawler and every person gets a status line within
// a bound, whatever the origin does: a 502 for a status no status line can
// carry or a body cut short, and for a trickle the origin's status within
// 200 ms of its headers (for a crawler, after the render failed: within
// render.timeout).
func TestLyingOrigin(t *testing.T) {
	c := newConf(t, lyingOrigin(t))
	c.Timeout = "2s"
	p := startPrism(t, c)
	addr := strings.TrimPrefix(p.Public, "http://")
	cases := []struct {
		path, want string
		bound      time.Duration
	}{
		// The documented bounds (README "Hostile pages"), generous against
		// what is expected (well under a second; a crawler of the trickle
		// waits render.timeout, 2s, for its render to time out first).
		{"/status000", "HTTP/1.1 502", 7 * time.Second},
		{"/short", "HTTP/1.1 502", 7 * time.Second},
		{"/trickle", "HTTP/1.1 200", 7 * time.Second}, // render.timeout + 5s
	}
	for _, tc := range cases {
		for _, ua := range []string{person, desktopBot} {
			start := time.Now()
			line := rawRequest(t, addr, "GET "+tc.path+" HTTP/1.1\r\nHost: "+siteHost+"\r\nUser-Agent: "+ua+"\r\nConnection: close\r\n\r\n")
			took := time.Since(start)
			if !strings.HasPrefix(line, tc.want) || took > tc.bound {
				t.Errorf("%s as %.10s: %q after %v, want %q within %v", tc.path, ua, line, took, tc.want, tc.bound)
			}
		}
	}
	if v := p.metric("prism_proxy_panics_total"); v != 0 {
		t.Errorf("%v panics", v)
	}
}

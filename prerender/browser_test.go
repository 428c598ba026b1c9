package prerender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/internal/traps"
)

// chromeBin is the browser the tests use: found as PRISM finds it
// (FindChrome), or named by PRISM_TEST_CHROME; PRISM_TEST_CHROME=none
// makes every browser test skip, as on a machine without one.
var chromeBin, chromeErr = testChrome()

func testChrome() (string, error) {
	v := os.Getenv("PRISM_TEST_CHROME")
	if v == "none" {
		return "", errors.New("PRISM_TEST_CHROME=none")
	}
	return FindChrome(v)
}

// needChrome skips t when there is no browser, saying how to get one.
func needChrome(t testing.TB) {
	t.Helper()
	if chromeErr != nil {
		t.Skipf("browser test skipped: %v (install Chromium: apt-get install chromium)", chromeErr)
	}
}

// testEnv is one origin, one "internal" service a page must never reach,
// and one Renderer shared by the tests of this package.
type testEnv struct {
	origin       *httptest.Server
	internal     *httptest.Server
	hits         sync.Map // path -> *atomic.Int64 (origin)
	internalHits atomic.Int64
	uas          sync.Map // path -> User-Agent seen
	renderHdr    sync.Map // path -> X-Prism-Render seen
	cookies      sync.Map // path -> Cookie header seen last
	r            *Renderer
	cancel       context.CancelFunc
	done         chan error
}

var (
	envOnce sync.Once
	env     *testEnv
	envErr  error
)

const pubHost = "site.test"

func (e *testEnv) count(path string) int64 {
	v, _ := e.hits.LoadOrStore(path, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

// pages are the origin's documents, by path.
var pages = map[string]string{
	"/js": `<!DOCTYPE html><html><head><title>t</title>
<script type="application/ld+json">{"@type":"Thing"}</script>
<script>document.addEventListener('DOMContentLoaded', () => { document.getElementById('c').textContent = 'written by js'; });</script>
<script type="module">window.x = 1</script>
</head><body><div id="c">static</div><img src="/img.png"><link rel="stylesheet" href="/style.css"></body></html>`,
	"/ready": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
setTimeout(() => { document.body.insertAdjacentHTML('beforeend', '<p id="late">late content</p>'); window.prerenderReady = true; }, 1500);</script></head><body><p>early</p></body></html>`,
	"/viewport":                `<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body><script>document.body.insertAdjacentHTML('beforeend', '<p id="w">width=' + innerWidth + ' touch=' + ('ontouchstart' in window) + '</p>')</script></body></html>`,
	"/meta-prerender":          `<html><head><meta name="prerender-status-code" content="404"></head><body>gone</body></html>`,
	"/meta-render":             `<html><head><meta property="render:status_code" content="301"><meta property="render:header" content="Location: /moved"></head><body>moved</body></html>`,
	"/meta-prerender-redirect": `<html><head><meta name="prerender-status-code" content="302"><meta name="prerender-header" content="Location: https://other.test/x"></head><body>x</body></html>`,
	"/assets": `<!DOCTYPE html><html><head><style>@font-face { font-family: F; src: url(/font.woff2); } body { font-family: F; background: url(/bg.png) }</style>
<script src="https://www.google-analytics.com/analytics.js"></script></head>
<body>assets<img src="/img.png"><video src="/v.mp4"></video><script src="/app.js"></script></body></html>`,
	"/app.js": `document.body.insertAdjacentHTML('beforeend', '<p id="app">app ran</p>')`,
	"/cached": `<!DOCTYPE html><html><body><p>cached</p><script src="/app.js"></script></body></html>`,
	"/blank":  `<!DOCTYPE html><html><head><title>x</title></head><body>  <script>var a = 1</script> </body></html>`,
	"/isolation": `<!DOCTYPE html><html><body><script>
const seen = 'cookie=[' + document.cookie + '] ls=[' + (localStorage.getItem('k') || '') + '] ss=[' + (sessionStorage.getItem('k') || '') + ']';
document.body.insertAdjacentHTML('beforeend', '<p id="seen">' + seen + '</p>');
document.cookie = 'jsc=1; path=/; max-age=3600'; localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v');
</script></body></html>`,
	"/vis-plain": `<!DOCTYPE html><html><body><script>
document.body.insertAdjacentHTML('beforeend', '<p id="out">plain native=' + Function.prototype.toString.call(requestAnimationFrame).includes('[native code]') + ' name=' + requestAnimationFrame.name + '</p>');
</script></body></html>`,
	"/vis-raf": `<!DOCTYPE html><html><body><script>
requestAnimationFrame(() => requestAnimationFrame(() => document.body.insertAdjacentHTML('beforeend', '<p id="out">from a frame</p>')));
</script></body></html>`,
	"/vis-io": `<!DOCTYPE html><html><body><div id="t">target</div><script>
new IntersectionObserver((es) => { if (es.some(e => e.isIntersecting)) document.body.insertAdjacentHTML('beforeend', '<p id="out">intersecting</p>'); }).observe(document.getElementById('t'));
</script></body></html>`,
	"/vis-state": `<!DOCTYPE html><html><body><script>
const w = () => { if (document.visibilityState === 'visible' && !document.getElementById('out')) document.body.insertAdjacentHTML('beforeend', '<p id="out">seen visible</p>'); };
w(); document.addEventListener('visibilitychange', w);
</script></body></html>`,
	"/vis-animate": `<!DOCTYPE html><html><body><div id="t">x</div><script>
document.getElementById('t').animate([{opacity: 0}, {opacity: 1}], 50).finished.then(() => document.body.insertAdjacentHTML('beforeend', '<p id="out">animation finished</p>'));
</script></body></html>`,
	"/vis-transition": `<!DOCTYPE html><html><head><style>#t{transition:opacity 50ms}</style></head><body><div id="t">x</div><script>
const t = document.getElementById('t');
t.addEventListener('transitionend', () => document.body.insertAdjacentHTML('beforeend', '<p id="out">transition ended</p>'));
getComputedStyle(t).opacity; t.style.opacity = '0.5';
</script></body></html>`,
	"/vis-lazy":       `<!DOCTYPE html><html><body><p>lazy</p><iframe loading="lazy" src="/vis-lazy-frame"></iframe></body></html>`,
	"/vis-lazy-frame": `<html><body>frame</body></html>`,
	"/isolation-writer": `<!DOCTYPE html><html><body onpagehide="localStorage.setItem('k', 'attr')"><p>writer</p><script>window.prerenderReady = false;
addEventListener('message', (m) => { document.body.insertAdjacentHTML('beforeend', '<p>' + m.data + '</p>'); window.prerenderReady = true; });
</script><iframe src="https://other.test/isolation-frame"></iframe><script>
const put = () => { document.cookie = 'late=1; path=/; max-age=3600'; localStorage.setItem('k', 'late'); sessionStorage.setItem('k', 'late'); };
setInterval(put, 1);
for (const ev of ['pagehide', 'unload', 'beforeunload', 'visibilitychange', 'freeze']) window.addEventListener(ev, put);
document.addEventListener('visibilitychange', put);
(function again() { put(); setTimeout(again, 0); })();
</script></body></html>`,
	"/chain": `<!DOCTYPE html><html><head><script>window.prerenderReady = false; let n = 0;
(function c() { if (++n < 40) return setTimeout(c, 5); document.body.insertAdjacentHTML('beforeend', '<p>chained=' + n + '</p>'); window.prerenderReady = true; })();
</script></head><body></body></html>`,
	"/isolation-frame": `<!DOCTYPE html><html><body><script>
parent.postMessage('frame-ss=[' + (sessionStorage.getItem('k') || '') + '] frame-ls=[' + (localStorage.getItem('k') || '') + ']', '*');
sessionStorage.setItem('k', 'frame-load');
addEventListener('pagehide', () => { document.cookie = 'framelate=1; path=/'; localStorage.setItem('k', 'frame'); sessionStorage.setItem('k', 'frame'); });
window.onunload = () => { localStorage.setItem('k', 'frame-onunload'); };
</script></body></html>`,
	"/longpoll":        `<!DOCTYPE html><html><body><p>polling</p><script>fetch('/hang').then(r => r.text())</script></body></html>`,
	"/redirect-target": `<html><body>target</body></html>`,
	"/bench": `<!DOCTYPE html><html><head><script>window.prerenderReady = false</script></head><body><div id="c"></div>
<script>document.getElementById('c').textContent = 'bench ' + Date.now(); localStorage.setItem('k', 'v'); document.cookie = 'c=1'; window.prerenderReady = true</script></body></html>`,
}

func ssrfPage(internal string) string {
	return `<!DOCTYPE html><html><body><p>ssrf</p>
<img src="` + internal + `/img.png">
<iframe src="` + internal + `/frame"></iframe>
<script>
fetch('` + internal + `/fetch').catch(() => {});
fetch('http://169.254.169.254/latest/meta-data/').catch(() => {});
fetch('http://[::1]:` + strings.TrimPrefix(internal[strings.LastIndex(internal, ":"):], ":") + `/v6').catch(() => {});
try { new WebSocket('` + strings.Replace(internal, "http", "ws", 1) + `/ws') } catch (e) {}
var s = document.createElement('script'); s.src = '` + internal + `/s.js'; document.head.appendChild(s);
</script></body></html>`
}

func setupEnv() (*testEnv, error) {
	envOnce.Do(func() {
		e := &testEnv{done: make(chan error, 1)}
		e.internal = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.internalHits.Add(1)
			io.WriteString(w, "secret")
		}))
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			v, _ := e.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			e.uas.Store(r.URL.Path, r.UserAgent())
			e.renderHdr.Store(r.URL.Path, r.Header.Get("X-Prism-Render"))
			e.cookies.Store(r.URL.Path, r.Header.Get("Cookie"))
			if hostileOrigin(w, r) || deployOrigin(w, r) || traps.Serve(w, r, traps.Early, traps.Fonts, endlessPages) {
				return
			}
			switch r.URL.Path {
			case "/404":
				w.WriteHeader(404)
				io.WriteString(w, `<html><body>not here</body></html>`)
				return
			case "/500":
				w.WriteHeader(500)
				io.WriteString(w, `<html><body>oops</body></html>`)
				return
			case "/301":
				http.Redirect(w, r, "/redirect-target", http.StatusMovedPermanently)
				return
			case "/slow-headers":
				select {
				case <-time.After(700 * time.Millisecond):
				case <-r.Context().Done():
				}
				io.WriteString(w, `<!DOCTYPE html><html><body><p>slow headers</p></body></html>`)
				return
			case "/download":
				w.Header().Set("Content-Disposition", "attachment; filename=x.bin")
				w.Header().Set("Content-Type", "application/octet-stream")
				io.WriteString(w, "binary")
				return
			case "/205":
				w.WriteHeader(http.StatusResetContent)
				return
			case "/204":
				w.WriteHeader(http.StatusNoContent)
				return
			case "/hang":
				<-r.Context().Done()
				return
			case "/ssrf":
				io.WriteString(w, ssrfPage(e.internal.URL))
				return
			case "/isolation":
				http.SetCookie(w, &http.Cookie{Name: "srv", Value: "1", Path: "/"})
			}
			body, ok := pages[r.URL.Path]
			if !ok {
				body, ok = hostilePages[r.URL.Path]
			}
			if !ok {
				w.WriteHeader(404)
				return
			}
			if strings.HasSuffix(r.URL.Path, ".js") {
				w.Header().Set("Content-Type", "text/javascript")
				w.Header().Set("Cache-Control", "max-age=3600")
			} else {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
			}
			io.WriteString(w, body)
		})
		e.origin = httptest.NewServer(mux)
		ou, _ := url.Parse(e.origin.URL)
		r, err := New(Options{
			ChromePath:               chromeBin,
			Tabs:                     1,
			Timeout:                  3 * time.Second,
			OnlineReservationPercent: 50,
			Origin: func(h string) (*url.URL, bool) {
				if h == pubHost || h == "other.test" {
					return ou, true
				}
				return nil, false
			},
			Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Metrics: metricdoc.NewSet(),
		})
		if err != nil {
			envErr = err
			return
		}
		e.r = r
		ctx, cancel := context.WithCancel(context.Background())
		e.cancel = cancel
		go func() { e.done <- r.Run(ctx) }()
		if err := waitHealthy(r, 30*time.Second); err != nil {
			envErr = err
			return
		}
		env = e
	})
	return env, envErr
}

func waitHealthy(r *Renderer, d time.Duration) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for r.Healthy() != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("browser not healthy after %s: %v", d, r.Healthy())
		}
		<-tick.C
	}
	return nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		env.cancel()
		if err := <-env.done; err != nil {
			fmt.Fprintln(os.Stderr, "Run:", err)
			code = 1
		}
		if left := chromiumDescendants(); len(left) > 0 {
			fmt.Fprintln(os.Stderr, "chromium processes left:", left)
			code = 1
		}
		env.origin.Close()
		env.internal.Close()
	}
	os.Exit(code)
}

func getEnv(t testing.TB) *testEnv {
	t.Helper()
	needChrome(t)
	e, err := setupEnv()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func render(t testing.TB, e *testEnv, req Request) (*Result, error) {
	t.Helper()
	if !strings.HasPrefix(req.URL, "http") {
		req.URL = "https://" + pubHost + req.URL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return e.r.Render(ctx, req)
}

func mustRender(t testing.TB, e *testEnv, req Request) *Result {
	t.Helper()
	res, err := render(t, e, req)
	if err != nil {
		t.Fatalf("Render(%s): %v", req.URL, err)
	}
	return res
}

func TestRenderJSAndPostprocess(t *testing.T) {
	e := getEnv(t)
	res := mustRender(t, e, Request{URL: "/js"})
	html := string(res.HTML)
	for _, want := range []string{"<!DOCTYPE html><html>", "written by js", `<script type="application/ld+json">{"@type":"Thing"}</script>`} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q:\n%s", want, html)
		}
	}
	if n := strings.Count(html, "<script"); n != 1 {
		t.Errorf("got %d script tags, want 1 (ld+json):\n%s", n, html)
	}
	if res.Status != 200 || res.Partial {
		t.Errorf("status %d partial %v, want 200 false", res.Status, res.Partial)
	}
	if res.Ended != EndedIdle || res.Settle <= 0 || res.Settle > res.Duration {
		t.Errorf("ended %q after %v (render %v), want idle within the render", res.Ended, res.Settle, res.Duration)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q", ct)
	}
	if got, _ := e.renderHdr.Load("/js"); got != "1" {
		t.Errorf("origin saw X-Prism-Render %q, want 1", got)
	}
}

func TestPrerenderReady(t *testing.T) {
	e := getEnv(t)
	before := e.r.metrics.ended[EndedReady].Get()
	res := mustRender(t, e, Request{URL: "/ready"})
	if res.Ended != EndedReady || res.Settle < 1500*time.Millisecond || res.Settle > res.Duration {
		t.Errorf("ended %q after %v (render %v), want ready after the page's 1.5s", res.Ended, res.Settle, res.Duration)
	}
	if got := e.r.metrics.ended[EndedReady].Get(); got != before+1 {
		t.Errorf(`prism_render_ended_total{reason="ready"} went from %d to %d, want one more`, before, got)
	}
	if !strings.Contains(string(res.HTML), "late content") {
		t.Errorf("late content missing:\n%s", res.HTML)
	}
	if res.Duration < 1500*time.Millisecond || res.Duration >= e.r.opts.Timeout {
		t.Errorf("duration %s, want between 1.5s and the timeout", res.Duration)
	}
}

func TestViewportAndUA(t *testing.T) {
	e := getEnv(t)
	tests := []struct {
		name   string
		req    Request
		want   string
		wantUA string
	}{
		{"desktop", Request{URL: "/viewport"}, "width=1366 touch=false", "X11; Linux x86_64"},
		{"mobile", Request{URL: "/viewport", Width: 412, Height: 915, Mobile: true}, "width=412 touch=true", "Mobile Safari"},
		{"custom ua", Request{URL: "/viewport", Width: 1000, Height: 700, UserAgent: "TestBot/1"}, "width=1000", "TestBot/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustRender(t, e, tt.req)
			if !strings.Contains(string(res.HTML), tt.want) {
				t.Errorf("page did not see %q:\n%s", tt.want, res.HTML)
			}
			ua, _ := e.uas.Load("/viewport")
			if s, _ := ua.(string); !strings.Contains(s, tt.wantUA) || strings.Contains(s, "Headless") {
				t.Errorf("origin saw UA %q, want it to contain %q and not Headless", s, tt.wantUA)
			}
		})
	}
}

func TestOriginStatus(t *testing.T) {
	e := getEnv(t)
	tests := []struct {
		path     string
		status   int
		location string
		html     string
	}{
		{"/404", 404, "", "not here"},
		{"/500", 500, "", ""},
		{"/301", 301, "https://" + pubHost + "/redirect-target", ""},
		{"/meta-prerender", 404, "", "gone"},
		{"/meta-render", 301, "https://" + pubHost + "/moved", ""},
		{"/meta-prerender-redirect", 302, "https://other.test/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res := mustRender(t, e, Request{URL: tt.path})
			if res.Status != tt.status {
				t.Errorf("status %d, want %d", res.Status, tt.status)
			}
			if got := res.Header.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.html == "" && len(res.HTML) != 0 && tt.status != 500 {
				t.Errorf("want empty HTML, got %s", res.HTML)
			}
			if !strings.Contains(string(res.HTML), tt.html) {
				t.Errorf("HTML lacks %q: %s", tt.html, res.HTML)
			}
		})
	}
	if n := e.count("/redirect-target"); n != 0 {
		t.Errorf("redirect target fetched %d times, want 0", n)
	}
}

func TestBlockedResources(t *testing.T) {
	e := getEnv(t)
	res := mustRender(t, e, Request{URL: "/assets"})
	if !strings.Contains(string(res.HTML), "app ran") {
		t.Errorf("first-party script did not run:\n%s", res.HTML)
	}
	for _, p := range []string{"/img.png", "/font.woff2", "/bg.png", "/v.mp4"} {
		if n := e.count(p); n != 0 {
			t.Errorf("%s fetched %d times, want 0", p, n)
		}
	}
}

func TestSSRFBlocked(t *testing.T) {
	e := getEnv(t)
	res := mustRender(t, e, Request{URL: "/ssrf"})
	if !strings.Contains(string(res.HTML), "ssrf") {
		t.Errorf("page not rendered: %s", res.HTML)
	}
	if n := e.internalHits.Load(); n != 0 {
		t.Errorf("internal service got %d requests, want 0", n)
	}
	// The page's own public URL at a loopback address is refused too.
	if _, err := render(t, e, Request{URL: e.internal.URL + "/"}); err == nil {
		t.Error("rendering a loopback URL succeeded")
	}
	if n := e.internalHits.Load(); n != 0 {
		t.Errorf("internal service got %d requests, want 0", n)
	}
}

func TestIsolation(t *testing.T) {
	e := getEnv(t)
	// Tabs is 1: every render reuses the same tab.
	first := mustRender(t, e, Request{URL: "/isolation"})
	if !strings.Contains(string(first.HTML), "cookie=[] ls=[] ss=[]") {
		t.Fatalf("first render saw state: %s", first.HTML)
	}
	for _, u := range []string{"https://" + pubHost + "/isolation", "https://other.test/isolation"} {
		res := mustRender(t, e, Request{URL: u})
		if !strings.Contains(string(res.HTML), "cookie=[] ls=[] ss=[]") {
			t.Errorf("%s: state carried over: %s", u, res.HTML)
		}
	}
}

// A page still writing state when its render ends leaves nothing behind:
// it is frozen before its storage is cleared, and never runs again.
func TestIsolationAfterCapture(t *testing.T) {
	e := getEnv(t)
	// The writer page (site.test) keeps writing, also from unload-time
	// listeners, as does its other.test iframe: neither origin may see it.
	frames := e.count("/isolation-frame")
	defer func() {
		if e.count("/isolation-frame") == frames {
			t.Error("the writer's iframe never loaded")
		}
	}()
	for range 2 {
		for _, u := range []string{"/isolation", "https://other.test/isolation"} {
			// The iframe's storage is partitioned under site.test: only
			// the next writer render sees it.
			if res := mustRender(t, e, Request{URL: "/isolation-writer"}); !strings.Contains(string(res.HTML), "frame-ss=[] frame-ls=[]") {
				t.Errorf("writer render: the iframe's state carried over: %s", res.HTML)
			}
			res := mustRender(t, e, Request{URL: u})
			if !strings.Contains(string(res.HTML), "cookie=[] ls=[] ss=[]") {
				t.Errorf("%s: state written after the capture carried over: %s", u, res.HTML)
			}
		}
	}
}

// A navigation that commits no document (204) fails the render instead of
// capturing the tab's previous page again; a URL with a fragment renders.
func TestNoNewDocument(t *testing.T) {
	e := getEnv(t)
	var res *Result
	for _, p := range []string{"/204", "/205", "/download"} {
		mustRender(t, e, Request{URL: "/js"})
		r, err := render(t, e, Request{URL: p})
		if err == nil && strings.Contains(string(r.HTML), "written by js") {
			t.Fatalf("%s captured the previous page: %s", p, r.HTML)
		}
	}
	// The navigation of a frozen page returns once the new document is in,
	// however long the origin takes to answer.
	if res := mustRender(t, e, Request{URL: "/slow-headers"}); !strings.Contains(string(res.HTML), "slow headers") {
		t.Errorf("slow origin: %s", res.HTML)
	}
	res = mustRender(t, e, Request{URL: "/js#frag"})
	if !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("fragment render: %s", res.HTML)
	}
	if res := mustRender(t, e, Request{URL: "/isolation"}); !strings.Contains(string(res.HTML), "cookie=[] ls=[] ss=[]") {
		t.Errorf("after the fragment render: %s", res.HTML)
	}
}

func TestBlank(t *testing.T) {
	e := getEnv(t)
	if _, err := render(t, e, Request{URL: "/blank"}); !errors.Is(err, ErrBlank) {
		t.Errorf("err %v, want ErrBlank", err)
	}
}

func TestTimeoutPartial(t *testing.T) {
	e := getEnv(t)
	start := time.Now()
	res := mustRender(t, e, Request{URL: "/longpoll"})
	if d := time.Since(start); d > e.r.opts.Timeout+time.Second {
		t.Errorf("took %s, want < %s", d, e.r.opts.Timeout+time.Second)
	}
	if !res.Partial || !strings.Contains(string(res.HTML), "polling") {
		t.Errorf("partial %v html %s", res.Partial, res.HTML)
	}
	if res.Ended != EndedTimeout || res.Settle < e.r.opts.Timeout/2 {
		t.Errorf("ended %q after %v, want timeout", res.Ended, res.Settle)
	}
}

func TestAfterTimeout(t *testing.T) {
	e := getEnv(t)
	mustRender(t, e, Request{URL: "/longpoll"})
	res := mustRender(t, e, Request{URL: "/js"})
	if res.Partial || res.Duration > e.r.opts.Timeout/2 {
		t.Errorf("render after a timed-out one: partial %v in %s", res.Partial, res.Duration)
	}
}

func TestRecacheCapacity(t *testing.T) {
	e := getEnv(t)
	var c Capacity
	deadline := time.Now().Add(5 * time.Second)
	for c = e.r.Capacity(); c.Free == 0 && time.Now().Before(deadline); c = e.r.Capacity() {
		time.Sleep(10 * time.Millisecond) // the last render's tab is being reset
	}
	if c.Tabs != 1 || c.Free != 1 || c.ReservedForOnline != 1 || c.AvailableForRecache != 0 {
		t.Errorf("Capacity() = %+v, want 1 tab, 1 free, 1 reserved", c)
	}
	start := time.Now()
	_, err := render(t, e, Request{URL: "/js", Class: Recache})
	if !errors.Is(err, ErrNoCapacity) || time.Since(start) > time.Second {
		t.Errorf("recache render: err %v after %s, want ErrNoCapacity at once", err, time.Since(start))
	}
}

func TestBadRequest(t *testing.T) {
	e := getEnv(t)
	for _, u := range []string{"ftp://x/", "/relative", "http://", "https://u:p@site.test/", "%zz"} {
		if _, err := e.r.Render(context.Background(), Request{URL: u}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("Render(%q) err %v, want ErrBadRequest", u, err)
		}
	}
}

func TestCrashRecovery(t *testing.T) {
	e := getEnv(t)
	mustRender(t, e, Request{URL: "/js"})
	inst := e.r.cur.Load()
	if inst == nil {
		t.Fatal("no browser")
	}
	errc := make(chan error, 1)
	hangs := e.count("/hang")
	go func() {
		_, err := render(t, e, Request{URL: "/longpoll"})
		errc <- err
	}()
	// Wait until the render is in flight, then kill the browser's group.
	deadline := time.Now().Add(5 * time.Second)
	for e.count("/hang") == hangs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	killed := time.Now()
	if err := syscall.Kill(-inst.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("in-flight render succeeded after the kill")
		}
		if d := time.Since(killed); d > time.Second {
			t.Errorf("in-flight render failed after %s, want fast", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight render hung after the kill")
	}
	if err := e.r.Healthy(); err == nil && e.r.cur.Load() == inst {
		t.Error("Healthy() nil right after the kill")
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		res, err := render(t, e, Request{URL: "/js"})
		if err == nil && strings.Contains(string(res.HTML), "written by js") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful render 10s after the crash: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("recovered %s after the kill", time.Since(killed))
	if s := e.r.Stats(); s.Crashes == 0 || s.Restarts == 0 {
		t.Errorf("Stats %+v, want a crash and a restart", s)
	}
}

func TestRecycle(t *testing.T) {
	e := getEnv(t)
	r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 2, RecycleAfter: 2, Origin: e.r.opts.Origin})
	first := r.cur.Load()
	for i := range 5 {
		res, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"})
		if err != nil || !strings.Contains(string(res.HTML), "written by js") {
			t.Fatalf("render %d: %v", i, err)
		}
	}
	// The recycle launches the next browser (and opens its tabs) while the
	// renders go on: it may land after them.
	waitFor(t, "the recycle", func() bool { return r.Stats().Restarts > 0 && r.cur.Load() != first })
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if first.pid > 0 && syscall.Kill(first.pid, 0) == nil {
		t.Errorf("recycled browser %d still running", first.pid)
	}
}

// TestRecycleOnMemory sets a memory limit every browser exceeds: the probe
// recycles the browser, and renders keep working across the swap.
func TestRecycleOnMemory(t *testing.T) {
	e := getEnv(t)
	r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, RecycleMemoryMB: 1, ProbeInterval: 100 * time.Millisecond, Origin: e.r.opts.Origin})
	first := r.cur.Load()
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().Restarts == 0 || r.cur.Load() == first {
		if time.Now().After(deadline) {
			t.Fatalf("browser over its memory limit not recycled: %+v", r.Stats())
		}
		time.Sleep(20 * time.Millisecond) // polling the supervisor's counters
	}
	if err := waitHealthy(r, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"})
	if err != nil || !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("render after a memory recycle: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestShutdownLeavesNothing(t *testing.T) {
	getEnv(t)
	dir := t.TempDir()
	r, _, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, UserDataDir: dir})
	pid := r.cur.Load().pid
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if r.Healthy() == nil {
		t.Error("Healthy() nil after shutdown")
	}
	if _, err := r.Render(context.Background(), Request{URL: "https://site.test/"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Render after shutdown: %v, want ErrUnavailable", err)
	}
	for _, p := range chromiumDescendants() {
		if p == pid || pgidOf(p) == pid {
			t.Errorf("chromium process %d of the stopped browser is left", p)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("profile dirs left: %v", ents)
	}
}

func TestNewMissingBrowser(t *testing.T) {
	_, err := New(Options{ChromePath: "/nonexistent/chromium"})
	if err == nil || !strings.Contains(err.Error(), "apt-get install chromium") {
		t.Errorf("New with a missing browser: %v, want an install hint", err)
	}
}

// chromiumDescendants lists chromium processes whose parent chain leads to
// this test process.
func chromiumDescendants() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		if !strings.Contains(string(comm), "chrom") {
			continue
		}
		for p := pid; p > 1; p = ppidOf(p) {
			if p == me {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// statInt returns field i of pid's stat after the command (0: state,
// 1: ppid, 2: pgrp), or 0.
func statInt(pid, i int) int {
	f := statFields(pid)
	if len(f) <= i {
		return 0
	}
	n, _ := strconv.Atoi(f[i])
	return n
}

func ppidOf(pid int) int { return statInt(pid, 1) }

func pgidOf(pid int) int { return statInt(pid, 2) }

// groupPIDs lists the processes in group pgid.
func groupPIDs(pgid int) []int {
	return slices.Collect(maps.Keys(groupStats(pgid)))
}

// groupCPU returns the CPU time used by this process and by the browser's
// process group.
func groupCPU(pgid int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) + browserCPU(pgid)
}

// BenchmarkRender renders one page over and over on one tab, with the
// default isolation (tab reused, cleared in between) and with a fresh
// incognito context per render.
func BenchmarkRender(b *testing.B) {
	e := getEnv(b)
	run := func(b *testing.B, r *Renderer) {
		pgid := r.cur.Load().pid
		ctx := context.Background()
		req := Request{URL: "https://" + pubHost + "/bench"}
		if _, err := r.Render(ctx, req); err != nil { // warm up: the tab exists
			b.Fatal(err)
		}
		cpu0, t0 := groupCPU(pgid), time.Now()
		b.ResetTimer()
		for b.Loop() {
			if _, err := r.Render(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		n := float64(b.N)
		b.ReportMetric(n/time.Since(t0).Seconds(), "renders/s")
		b.ReportMetric(float64((groupCPU(pgid)-cpu0).Milliseconds())/n, "cpu-ms/render")
	}
	b.Run("reuse-and-clear", func(b *testing.B) { run(b, e.r) })
	b.Run("incognito-per-render", func(b *testing.B) {
		r, err := New(Options{ChromePath: chromeBin, Tabs: 1, Origin: e.r.opts.Origin})
		if err != nil {
			b.Fatal(err)
		}
		r.freshTabs = true
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		defer func() { cancel(); <-done }()
		if err := waitHealthy(r, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		run(b, r)
	})
}

func TestHungBrowser(t *testing.T) {
	e := getEnv(t)
	r, ctx, _ := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, ProbeInterval: 100 * time.Millisecond, Origin: e.r.opts.Origin})
	hung := r.cur.Load()
	if err := syscall.Kill(-hung.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(probeTimeout + 5*time.Second)
	for r.Healthy() == nil || r.cur.Load() == hung {
		if time.Now().After(deadline) {
			t.Fatal("hung browser not detected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := waitHealthy(r, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if f := statFields(hung.pid); len(f) > 0 && f[0] != "Z" {
		t.Errorf("hung browser %d still exists (state %s)", hung.pid, f[0])
	}
	if _, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"}); err != nil {
		t.Errorf("render after the restart: %v", err)
	}
}

// runRenderer starts a Renderer with opts and waits until its browser is up.
// stop cancels Run and returns Run's error; it is also called at the end of
// the test if the test did not.
func runRenderer(t *testing.T, opts Options) (r *Renderer, ctx context.Context, stop func() error) {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	if err := waitHealthy(r, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return r, ctx, stop
}

// The memory recycle_memory_mb is compared with counts pages Chromium's
// processes share once: well under the sum of their RSS.
func TestGroupMemoryIsPSS(t *testing.T) {
	e := getEnv(t)
	mustRender(t, e, Request{URL: "/js"})
	pgid := e.r.cur.Load().pid
	var rss int64
	for _, pid := range groupPIDs(pgid) {
		f := statFields(pid)
		n, _ := strconv.ParseInt(f[21], 10, 64)
		rss += n * int64(os.Getpagesize())
	}
	mem := groupMemory(pgid)
	t.Logf("browser group: PSS %d MiB, RSS summed %d MiB", mem>>20, rss>>20)
	if mem <= 0 || mem >= rss {
		t.Errorf("groupMemory %d, RSS summed %d", mem, rss)
	}
}

// A script the origin lets browsers cache for an hour, with no validator
// (ETag, Last-Modified) the browser could revalidate it by, is fetched whole
// again by every render: a recache after a deploy sees the new one
// (TestRevalidatedAcrossRenders has the scripts that carry one).
func TestNoCacheAcrossRenders(t *testing.T) {
	e := getEnv(t)
	n := e.count("/app.js")
	for range 3 {
		if res := mustRender(t, e, Request{URL: "/cached"}); !strings.Contains(string(res.HTML), "app ran") {
			t.Fatalf("/cached: %s", res.HTML)
		}
	}
	if got := e.count("/app.js") - n; got != 3 {
		t.Errorf("/app.js (Cache-Control: max-age=3600) fetched %d times in 3 renders, want 3", got)
	}
}

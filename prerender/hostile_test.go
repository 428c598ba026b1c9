package prerender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-rod/rod/lib/proto"
)

// Hostile pages: each attacks the renderer, the renders after it or PRISM
// itself. The env's renderer has one tab, so every render reuses the tab
// the attacker used, on site.test and on other.test (two configured hosts
// of one origin).

// resetEscapeJS replaces what a reset done from inside the page would lean
// on, then writes state from every exit-time event, from a timer and from
// an about:blank iframe's listeners.
const resetEscapeJS = `
const put = (v) => { try {
	document.cookie = 'escaped=' + v + '; path=/; max-age=3600';
	localStorage.setItem('k', 'escaped-' + v); sessionStorage.setItem('k', 'escaped-' + v);
	navigator.sendBeacon('/beacon?' + v); fetch('/beacon?f' + v, {keepalive: true});
} catch (e) {} };
const f = document.createElement('iframe'); document.body.appendChild(f);
for (const ev of ['pagehide', 'unload', 'beforeunload']) f.contentWindow.addEventListener(ev, () => put('frame-' + ev));
Symbol.for = () => Symbol('nope');
Array.prototype.splice = function () { return []; };
Array.prototype.push = function () { return 0; };
EventTarget.prototype.removeEventListener = function () {};
Function.prototype.call = function () {};
Function.prototype.apply = function () {};
Reflect.apply = function () {};
Storage.prototype.clear = function () {};
Storage.prototype.removeItem = function () {};
Object.defineProperty = function (o) { return o; };
for (const ev of ['pagehide', 'unload', 'beforeunload', 'pageswap', 'visibilitychange', 'freeze', 'resume']) {
	addEventListener(ev, () => put(ev), true); addEventListener(ev, () => put(ev)); document.addEventListener(ev, () => put(ev));
}
onunload = () => put('onunload'); onpagehide = () => put('onpagehide');
document.body.setAttribute('onpagehide', "document.cookie = 'attr=1; path=/'");
setInterval(() => put('timer'), 1);
document.body.insertAdjacentHTML('beforeend', '<p id="esc">escape ready</p>');
`

// popupJS opens popups (window.open, a target=_blank link, a noopener
// window) that script their opener from their own timers: write into
// whatever document the tab holds next, set its cookies, and navigate it
// away when it is the other host.
const popupJS = `
window.attack = () => {
	let opened = 0;
	const evil = "setInterval(() => { try {" +
		"opener.document.cookie = 'evil=1; path=/; max-age=3600'; opener.localStorage.setItem('k', 'evil');" +
		"if (opener.document.body && !opener.document.getElementById('evil')) opener.document.body.insertAdjacentHTML('beforeend', '<p id=evil>ATTACKER TEXT</p>');" +
		"} catch (e) {} try { if (opener.location.host !== 'site.test') opener.location.href = 'https://site.test/attacker-landing'; } catch (e) {} }, 1);";
	for (let i = 0; i < 3; i++) {
		const w = window.open('about:blank', 'p' + i);
		if (w) { opened++; try { w.eval(evil); } catch (e) {} }
	}
	const a = document.createElement('a'); a.href = '/attacker-landing'; a.target = '_blank'; document.body.appendChild(a); a.click();
	window.open('/attacker-landing', '_blank', 'noopener');
	return opened;
};
`

var hostilePages = map[string]string{
	"/popup": `<!DOCTYPE html><html><body><p>popups</p><script>` + popupJS + `
document.body.insertAdjacentHTML('beforeend', '<p id="opened">opened=' + attack() + '</p>');
</script></body></html>`,
	// The same, started by a user gesture (the test's), which popup
	// blocking lets through: the popups exist, and must be closed.
	"/popup-gesture": `<!DOCTYPE html><html><head><script>window.prerenderReady = false</script></head><body><p>popups</p><script>` + popupJS + `
window.go = () => { document.body.insertAdjacentHTML('beforeend', '<p id="opened">opened=' + attack() + '</p>'); window.prerenderReady = true; };
</script></body></html>`,
	// document.open() erases every listener of the window, the guard's too,
	// before the page adds its own exit handlers.
	"/reset-docopen": `<!DOCTYPE html><html><body><script>
const put = (v) => { try { document.cookie = 'opened=' + v + '; path=/; max-age=3600'; localStorage.setItem('k', 'opened-' + v); sessionStorage.setItem('k', 'opened-' + v); } catch (e) {} };
document.open(); document.write('<!DOCTYPE html><html><body><p>rewritten</p></body></html>'); document.close();
for (const ev of ['pagehide', 'unload', 'beforeunload', 'pageswap']) addEventListener(ev, () => put(ev));
onunload = () => put('onunload');
</script></body></html>`,
	"/attacker-landing": `<!DOCTYPE html><html><body><p>ATTACKER LANDING</p></body></html>`,
	// A dedicated worker that writes IndexedDB every millisecond from the
	// moment the page is ready: a worker outliving its render's reset
	// would leave its write to the next render of the site. The page says
	// what it found first.
	"/reset-worker": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
const o = indexedDB.open('esc', 1); o.onupgradeneeded = () => o.result.createObjectStore('s');
o.onsuccess = () => { const g = o.result.transaction('s').objectStore('s').get('k'); g.onsuccess = () => {
	document.body.insertAdjacentHTML('beforeend', '<p id="idb">idb=[' + (g.result || '') + ']</p>'); o.result.close();
	const code = "const put = (then) => { const o = indexedDB.open('esc', 1); o.onupgradeneeded = () => o.result.createObjectStore('s'); " +
		"o.onsuccess = () => { const db = o.result; try { const q = db.transaction('s', 'readwrite').objectStore('s').put('escaped-worker', 'k'); " +
		"q.onsuccess = () => { db.close(); then(); }; q.onerror = () => { db.close(); then(); }; } catch (e) { db.close(); then(); } }; o.onerror = () => then(); }; " +
		"put(() => { postMessage('ready'); (function again() { put(() => setTimeout(again, 1)); })(); });";
	const w = new Worker(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
	w.onmessage = () => { document.body.insertAdjacentHTML('beforeend', '<p id="w">worker writing</p>'); window.prerenderReady = true; };
}; };
</script></head><body><p>worker page</p></body></html>`,
	// A page for the same URL again with a fragment: the tab holds the
	// last render's document frozen, and a navigation differing from its
	// URL only by the fragment would stay in that document. /frag-move
	// moves its own URL to /frag-doc first.
	"/frag-doc":  `<!DOCTYPE html><html><body><script>document.body.insertAdjacentHTML('beforeend', '<p id="f">frag doc ' + location.hash + '</p>');</script></body></html>`,
	"/frag-move": `<!DOCTYPE html><html><body><script>history.replaceState({}, '', '/frag-doc'); document.body.insertAdjacentHTML('beforeend', '<p id="f">moved</p>');</script></body></html>`,
	// The escape, in the page and in a cross-origin iframe that reports
	// what it finds of an earlier render (its storage is partitioned under
	// the page's site: only a later render of this page can see it).
	"/reset-escape": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
addEventListener('message', (m) => { document.body.insertAdjacentHTML('beforeend', '<p id="frame">' + m.data + '</p>'); window.prerenderReady = true; });
</script></head><body><iframe src="https://other.test/escape-frame"></iframe><script>` + resetEscapeJS + `</script></body></html>`,
	"/escape-frame": `<!DOCTYPE html><html><body><script>
parent.postMessage('frame saw cookie=[' + document.cookie + '] ls=[' + (localStorage.getItem('k') || '') + '] ss=[' + (sessionStorage.getItem('k') || '') + ']', '*');
` + resetEscapeJS + `</script></body></html>`,
	"/flood-push": `<!DOCTYPE html><html><head><script>window.prerenderReady = false; let i = 0;
(function f() { for (let k = 0; k < 2000; k++) history.pushState({}, '', '/flood-push?' + (i++)); setTimeout(f, 0); })();
</script></head><body><p>push flood</p></body></html>`,
	"/flood-hash": `<!DOCTYPE html><html><head><script>window.prerenderReady = false; let i = 0;
(function f() { for (let k = 0; k < 2000; k++) location.hash = 'h' + (i++); setTimeout(f, 0); })();
</script></head><body><p>hash flood</p></body></html>`,
	"/dialogs": `<!DOCTYPE html><html><body><script>
alert('a'); const c = confirm('b'); const p = prompt('c', 'default');
setTimeout(() => { alert('later'); document.body.insertAdjacentHTML('beforeend', '<p id="d">after dialogs confirm=' + c + ' prompt=' + p + '</p>'); }, 50);
</script></body></html>`,
	// Sticky activation (the test's gesture) lets beforeunload ask.
	"/beforeunload": `<!DOCTYPE html><html><head><script>window.prerenderReady = false</script></head><body><p>leave me</p><script>
addEventListener('beforeunload', (e) => { e.preventDefault(); e.returnValue = 'stay'; return 'stay'; });
onbeforeunload = () => 'stay';
window.go = () => { window.prerenderReady = true; };
</script></body></html>`,
	// 100000 nested elements overflow the renderer's stack in layout.
	"/nest": `<!DOCTYPE html><html><body><script>
let el = document.body; for (let i = 0; i < 100000; i++) { const d = document.createElement('div'); el.appendChild(d); el = d; }
el.textContent = 'deep'; document.body.offsetHeight; document.body.insertAdjacentHTML('beforeend', '<p>survived</p>');
</script></body></html>`,
	"/wait-forever": `<!DOCTYPE html><html><head><script>window.prerenderReady = false</script></head><body><p>waiting</p></body></html>`,
	// Large bodies, streamed to the browser whole: a script of 3 MB (known
	// length) and a JSON of 2 MB (chunked), checked by the page.
	"/stream-ok": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
Promise.all([fetch('/big3').then(r => r.text()), fetch('/chunked2').then(r => r.text())]).then(([a, b]) => {
	document.body.insertAdjacentHTML('beforeend', '<p id="s">lengths ' + a.length + ' ' + b.length + ' ends ' + a.slice(-3) + ' ' + b.slice(-3) + '</p>'); window.prerenderReady = true; });
</script></head><body><p>streams</p></body></html>`,
	"/fetch-huge": `<!DOCTYPE html><html><head><script>window.prerenderReady = false;
fetch('/chunked-huge').then(r => r.arrayBuffer()).then(() => 'whole', () => 'cut').then(v => {
	document.body.insertAdjacentHTML('beforeend', '<p id="h">' + v + '</p>'); window.prerenderReady = true; });
</script></head><body><p>huge</p></body></html>`,
	"/fetch-big": `<!DOCTYPE html><html><head><title>big</title><script>window.prerenderReady = false;
let ok = 0, failed = 0;
Promise.all(Array.from({length: 30}, (_, i) => fetch('/big?' + i).then(r => r.arrayBuffer()).then(() => ok++, () => failed++))).then(() => {
	document.body.insertAdjacentHTML('beforeend', '<p id="big">big ok=' + ok + ' failed=' + failed + '</p>'); window.prerenderReady = true; });
</script></head><body><p>fetching</p></body></html>`,
}

// bigBody is what /big answers: 19 MB, under MaxBodyBytes.
var bigBody = []byte(strings.Repeat("b", 19<<20))

// beacons counts requests to /beacon made from exit-time handlers.
var beacons atomic.Int64

// dynamicPages are pages a test builds at run time (path -> HTML).
var dynamicPages sync.Map

// hostileOrigin serves the hostile pages' special paths; it reports
// whether it answered.
func hostileOrigin(w http.ResponseWriter, r *http.Request) bool {
	if v, ok := dynamicPages.Load(r.URL.Path); ok {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, v.(string))
		return true
	}
	switch r.URL.Path {
	case "/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(bigBody)))
		w.Write(bigBody)
		return true
	case "/big3":
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Content-Length", strconv.Itoa(3<<20))
		w.Write(bigBody[:3<<20-3])
		io.WriteString(w, "END")
		return true
	case "/chunked-huge": // 38 MB of unknown length: past MaxBodyBytes while streamed
		for range 2 {
			w.Write(bigBody)
			w.(http.Flusher).Flush()
		}
		return true
	case "/chunked2":
		w.Header().Set("Content-Type", "application/json")
		for range 2 {
			w.Write(bigBody[:1<<20])
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "EOF")
		return true
	case "/beacon":
		// Those a page sends while it renders are its own; only those from
		// its exit-time handlers (named by the event) are counted.
		if q := strings.TrimPrefix(r.URL.RawQuery, "f"); q != "timer" {
			beacons.Add(1)
		}
		return true
	}
	return false
}

// envTabs is the set of the env renderer's open tabs (a tab that broke
// and one that replaced it may both be there until the first is closed).
func envTabs(e *testEnv) map[*tab]bool {
	out := map[*tab]bool{}
	e.r.cur.Load().tabs.Range(func(_, v any) bool { out[v.(*tab)] = true; return true })
	return out
}

// renderingTab is the env renderer's tab that renders path, once one does.
func renderingTab(t *testing.T, e *testEnv, path string) *tab {
	t.Helper()
	var found *tab
	waitFor(t, "a tab rendering "+path, func() bool {
		for tb := range envTabs(e) {
			if st := tb.current(); st != nil && st.pub.Path == path {
				found = tb
				return true
			}
		}
		return false
	})
	return found
}

// waitResets waits until no render or reset holds a tab of the env
// renderer (a reset runs after its render returned).
func waitResets(t *testing.T, e *testEnv) {
	t.Helper()
	p := e.r.cur.Load().pool
	waitFor(t, "the tabs' resets", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.inUse == 0
	})
}

// duringRender renders path and, once the page is loaded, runs expr in it
// as if a person's gesture started it (Runtime.evaluate userGesture).
func duringRender(t *testing.T, e *testEnv, path, expr string) (*Result, error) {
	t.Helper()
	type out struct {
		res *Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := render(t, e, Request{URL: path})
		done <- out{res, err}
	}()
	tb := renderingTab(t, e, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := proto.RuntimeEvaluate{Expression: "typeof window.go === 'function' && (window.go(), true)", UserGesture: true, ReturnByValue: true}.Call(tb.page.Context(ctx))
		cancel()
		if err == nil && res.Result.Value.Bool() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became ready for the gesture", path)
		}
		time.Sleep(10 * time.Millisecond) // polling the page, not waiting for time
	}
	o := <-done
	return o.res, o.err
}

// checkClean renders the isolation page on both hosts and fails if any
// state, text or navigation of an earlier render shows in it, in what the
// page saw or in what the origin received.
func checkClean(t *testing.T, e *testEnv, after string) {
	t.Helper()
	for _, u := range []string{"https://" + pubHost + "/isolation", "https://other.test/isolation", "https://" + pubHost + "/isolation"} {
		res := mustRender(t, e, Request{URL: u})
		html := string(res.HTML)
		if !strings.Contains(html, "cookie=[] ls=[] ss=[]") || strings.Contains(html, "ATTACKER") || strings.Contains(html, "escaped") {
			t.Errorf("after %s, %s: state or text of the attacker: %s", after, u, html)
		}
		if c, _ := e.cookies.Load("/isolation"); c != nil && c.(string) != "" {
			t.Errorf("after %s, %s: the origin received cookies %q", after, u, c)
		}
	}
}

func TestHostilePopups(t *testing.T) {
	e := getEnv(t)
	landing := e.count("/attacker-landing")
	res := mustRender(t, e, Request{URL: "/popup"})
	t.Logf("without a gesture: %s", between(string(res.HTML), `<p id="opened">`, "</p>"))
	if !strings.Contains(string(res.HTML), "opened=0") {
		t.Errorf("popups opened without a user gesture: %s", res.HTML)
	}
	checkClean(t, e, "/popup")

	closed := e.r.metrics.popups.Get()
	res, err := duringRender(t, e, "/popup-gesture", "")
	if err != nil {
		t.Fatal(err)
	}
	// The gesture lets one popup through (it is used up by the first).
	if !strings.Contains(string(res.HTML), "opened=1") {
		t.Errorf("with a gesture a popup should have opened (and then been closed): %s", res.HTML)
	}
	checkClean(t, e, "/popup-gesture")
	if n := e.r.metrics.popups.Get() - closed; n < 1 {
		t.Errorf("%d popups closed, want at least 1", n)
	}
	if n := e.count("/attacker-landing") - landing; n > 2 {
		t.Errorf("the attacker's landing page was fetched %d times (at most the 2 popups that load it, before they are closed)", n)
	}
	checkTargets(t, e)
}

// checkTargets fails if a tab's browser context holds anything but its
// page once the resets are done.
func checkTargets(t *testing.T, e *testEnv) {
	t.Helper()
	waitResets(t, e)
	list, err := proto.TargetGetTargets{}.Call(e.r.cur.Load().b)
	if err != nil {
		t.Fatal(err)
	}
	for tb := range envTabs(e) {
		for _, ti := range list.TargetInfos {
			if ti.BrowserContextID == tb.bctx.BrowserContextID && ti.TargetID != tb.page.TargetID && pageOwned(ti.Type) {
				t.Errorf("target %s %s %s outlived its render", ti.Type, ti.URL, ti.TargetID)
			}
		}
	}
}

func TestHostileResetEscape(t *testing.T) {
	e := getEnv(t)
	before := beacons.Load()
	for i := range 3 {
		res := mustRender(t, e, Request{URL: "/reset-escape"})
		html := string(res.HTML)
		if !strings.Contains(html, "escape ready") || !strings.Contains(html, "frame saw cookie=[] ls=[] ss=[]") {
			t.Errorf("escape render %d: an earlier render's state, or no frame report: %s", i, html)
		}
		checkClean(t, e, "/reset-escape")
	}
	if n := beacons.Load() - before; n != 0 {
		t.Errorf("%d beacons from the page's exit handlers reached the origin", n)
	}
	for range 3 {
		if res := mustRender(t, e, Request{URL: "/reset-docopen"}); !strings.Contains(string(res.HTML), "rewritten") {
			t.Fatalf("/reset-docopen: %s", res.HTML)
		}
		checkClean(t, e, "/reset-docopen")
	}
}

func TestHostileWorkerReset(t *testing.T) {
	e := getEnv(t)
	for i := range 3 {
		res := mustRender(t, e, Request{URL: "/reset-worker"})
		html := string(res.HTML)
		if !strings.Contains(html, "worker writing") || !strings.Contains(html, "idb=[]") {
			t.Errorf("render %d: an earlier render's worker wrote, or the worker did not run: %s", i, html)
		}
	}
	checkClean(t, e, "/reset-worker")
}

// A render of a URL that differs from the tab's last page only by its
// hashbang fragment (that page's own URL, or the one it moved to with the
// History API) loads a document of its own, at once. Other fragments are
// dropped (parsePublicURL).
func TestFragmentAfterSamePage(t *testing.T) {
	e := getEnv(t)
	for _, c := range []struct{ first, next, want string }{
		{"/frag-doc", "/frag-doc#!/a", "frag doc #!/a"},
		{"/frag-doc#!/a", "/frag-doc#!/b", "frag doc #!/b"},
		{"/frag-move", "/frag-doc#!/c", "frag doc #!/c"},
		{"/frag-doc#!/d", "/frag-doc", "frag doc </p>"},
		{"/frag-doc#plain", "/frag-doc#plain", "frag doc </p>"}, // not a hashbang: dropped
	} {
		mustRender(t, e, Request{URL: c.first})
		before := e.count("/frag-doc")
		res := mustRender(t, e, Request{URL: c.next})
		if html := string(res.HTML); !strings.Contains(html, c.want) || res.Partial || res.Ended == EndedTimeout {
			t.Errorf("%s after %s: ended %s, partial %v: %s", c.next, c.first, res.Ended, res.Partial, html)
		}
		if n := e.count("/frag-doc") - before; n != 1 {
			t.Errorf("%s after %s: %d document requests, want 1", c.next, c.first, n)
		}
	}
}

func TestHostileFloods(t *testing.T) {
	e := getEnv(t)
	crashes, restarts := e.r.crashes.Load(), e.r.restarts.Load()
	inst := e.r.cur.Load()
	// Long enough for several liveness probes (every ProbeInterval, 5s).
	for range 2 {
		for _, p := range []string{"/flood-push", "/flood-hash"} {
			res := mustRender(t, e, Request{URL: p})
			if !res.Partial || !strings.Contains(string(res.HTML), "flood") {
				t.Errorf("%s: partial=%v %.200s", p, res.Partial, res.HTML)
			}
			if err := e.r.Healthy(); err != nil {
				t.Errorf("after %s: browser unhealthy: %v", p, err)
			}
		}
	}
	start := time.Now()
	res := mustRender(t, e, Request{URL: "/js"})
	if !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("render after the floods: %s", res.HTML)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("render after the floods took %v", d)
	}
	if e.r.crashes.Load() != crashes || e.r.restarts.Load() != restarts || e.r.cur.Load() != inst {
		t.Errorf("the floods took the browser down: crashes %d -> %d, restarts %d -> %d",
			crashes, e.r.crashes.Load(), restarts, e.r.restarts.Load())
	}
}

func TestHostileDialogs(t *testing.T) {
	e := getEnv(t)
	dismissed := e.r.metrics.dialogs.Get()
	start := time.Now()
	res := mustRender(t, e, Request{URL: "/dialogs"})
	if d := time.Since(start); d > 2*time.Second || res.Partial {
		t.Errorf("dialog page took %v (partial %v), want a quick complete render", d, res.Partial)
	}
	if !strings.Contains(string(res.HTML), "after dialogs confirm=false prompt=null") {
		t.Errorf("dialogs page: %s", res.HTML)
	}
	if n := e.r.metrics.dialogs.Get() - dismissed; n != 4 {
		t.Errorf("%d dialogs dismissed, want 4", n)
	}
	// beforeunload with sticky activation would block the reset's
	// navigation without an answer.
	res, err := duringRender(t, e, "/beforeunload", "")
	if err != nil || !strings.Contains(string(res.HTML), "leave me") {
		t.Fatalf("beforeunload page: %v %v", res, err)
	}
	start = time.Now()
	if res := mustRender(t, e, Request{URL: "/js"}); !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("after beforeunload: %s", res.HTML)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("render after a beforeunload page took %v", d)
	}
}

func TestHostileCrash(t *testing.T) {
	e := getEnv(t)
	crashes := e.r.metrics.pageCrashes.Get()
	done := make(chan error, 1)
	var returned time.Time
	go func() {
		_, err := render(t, e, Request{URL: "/wait-forever"})
		returned = time.Now()
		done <- err
	}()
	tb := renderingTab(t, e, "/wait-forever")
	waitFor(t, "the page to load", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res, err := proto.RuntimeEvaluate{Expression: "location.pathname === '/wait-forever' && document.readyState === 'complete'", ReturnByValue: true}.Call(tb.page.Context(ctx))
		return err == nil && res.Result.Value.Bool()
	})
	crashAt := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = proto.PageCrash{}.Call(tb.page.Context(ctx)) // no answer: the renderer is gone
	cancel()
	err := <-done
	if !errors.Is(err, ErrPageCrashed) {
		t.Errorf("render of a crashed page: %v, want ErrPageCrashed", err)
	}
	if d := returned.Sub(crashAt); d > 2*time.Second {
		t.Errorf("crash noticed after %v, want within 2s", d)
	}
	if n := e.r.metrics.pageCrashes.Get() - crashes; n != 1 {
		t.Errorf("prism_render_page_crashes_total +%d, want +1", n)
	}
	if res := mustRender(t, e, Request{URL: "/js"}); !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("render after the crash: %s", res.HTML)
	}
	waitResets(t, e)
	if envTabs(e)[tb] {
		t.Error("the crashed tab was kept")
	}
	// A page that crashes its renderer by itself.
	start := time.Now()
	if _, err := render(t, e, Request{URL: "/nest"}); !errors.Is(err, ErrPageCrashed) {
		t.Errorf("/nest: %v, want ErrPageCrashed", err)
	}
	if d := time.Since(start); d >= e.r.opts.Timeout {
		t.Errorf("/nest ended after %v, not before the timeout (%v)", d, e.r.opts.Timeout)
	}
	if res := mustRender(t, e, Request{URL: "/js"}); !strings.Contains(string(res.HTML), "written by js") {
		t.Errorf("render after /nest: %s", res.HTML)
	}
}

// A tab whose renderer crashed while it waited for a render is replaced
// by the next render, which succeeds: the crash was no page's doing.
func TestIdleTabCrash(t *testing.T) {
	e := getEnv(t)
	mustRender(t, e, Request{URL: "/js"})
	waitResets(t, e)
	tabs := envTabs(e)
	for tb := range tabs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = proto.PageCrash{}.Call(tb.page.Context(ctx)) // no answer: the renderer is gone
		cancel()
	}
	waitFor(t, "the crashes to be reported", func() bool {
		for tb := range tabs {
			if !tb.broken.Load() {
				return false
			}
		}
		return true
	})
	crashed := e.r.metrics.total[outcomeCrashed].Get()
	for range len(tabs) + 1 {
		if res := mustRender(t, e, Request{URL: "/js"}); !strings.Contains(string(res.HTML), "written by js") {
			t.Errorf("render after the idle crash: %s", res.HTML)
		}
	}
	if n := e.r.metrics.total[outcomeCrashed].Get() - crashed; n != 0 {
		t.Errorf("%d renders ended crashed, want none", n)
	}
	waitResets(t, e)
	for tb := range envTabs(e) {
		if tabs[tb] {
			t.Error("a crashed tab was kept")
		}
	}
}

// Bodies past streamThreshold reach the page whole, streamed; a page that
// aims at the stream server itself reaches nothing.
func TestLargeBodiesStreamed(t *testing.T) {
	e := getEnv(t)
	addr := e.r.streams.addr()
	dynamicPages.Store("/stream-probe", `<!DOCTYPE html><html><body><p>probe</p><script>
fetch('http://`+addr+`/x').catch(() => {}); fetch('//`+addr+`/y', {mode: 'no-cors'}).catch(() => {});
const i = document.createElement('iframe'); i.src = 'http://`+addr+`/z'; document.body.appendChild(i);
</script></body></html>`)
	mustRender(t, e, Request{URL: "/stream-probe"})
	e.r.streams.mu.Lock()
	unknown := e.r.streams.unknown
	e.r.streams.mu.Unlock()
	if unknown != 0 {
		t.Errorf("a page reached the stream server %d times", unknown)
	}
	res := mustRender(t, e, Request{URL: "/stream-ok"})
	if got := between(string(res.HTML), `<p id="s">`, "</p>"); got != fmt.Sprintf("lengths %d %d ends END EOF", 3<<20, 2<<20+3) {
		t.Errorf("streamed bodies: %q", got)
	}
	if res.Partial {
		t.Error("partial")
	}
	// Past MaxBodyBytes while streaming: cut, counted, and the render is
	// served as partial, as a body refused before it was read would be.
	refused := e.r.metrics.refused["body_too_large"].Get()
	res = mustRender(t, e, Request{URL: "/fetch-huge"})
	if got := between(string(res.HTML), `<p id="h">`, "</p>"); got != "cut" || !res.Partial {
		t.Errorf("38 MB streamed body: %q, partial %v; want cut, partial", got, res.Partial)
	}
	if e.r.metrics.refused["body_too_large"].Get() == refused {
		t.Error("the cut body was not counted as refused")
	}
}

func TestHostileLargeFetches(t *testing.T) {
	e := getEnv(t)
	refused := e.r.metrics.refused["page_bytes"].Get() + e.r.metrics.refused["inflight_bytes"].Get()
	res := mustRender(t, e, Request{URL: "/fetch-big"})
	got := between(string(res.HTML), `<p id="big">`, "</p>")
	t.Logf("%s", got)
	// Partial: over its byte bound, or (on a loaded machine) at the timeout
	// before the fetches that were let through all arrived.
	if !res.Partial || strings.Contains(got, "ok=30") {
		t.Errorf("30 fetches of 19 MB: partial=%v %q; want some refused and the render partial", res.Partial, got)
	}
	if e.r.metrics.refused["page_bytes"].Get()+e.r.metrics.refused["inflight_bytes"].Get() == refused {
		t.Error("no fetch counted as refused")
	}
	if res := mustRender(t, e, Request{URL: "/js"}); !strings.Contains(string(res.HTML), "written by js") || res.Partial {
		t.Errorf("render after the large fetches: %s", res.HTML)
	}
}

// between returns the text of s between the first from and the next to.
func between(s, from, to string) string {
	_, s, _ = strings.Cut(s, from)
	s, _, _ = strings.Cut(s, to)
	return s
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not waiting for time
	}
}

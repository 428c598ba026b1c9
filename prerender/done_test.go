package prerender

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/traps"
)

var endlessPages = traps.Endless(doneKey)

// TestEarlyCaptureTraps renders every trap page: each must be captured
// complete, and by the idle rule (its signals), not the quiet rule or the
// timeout. With fonts blocked (the default), the font traps are done at
// once.
func TestEarlyCaptureTraps(t *testing.T) {
	e := getEnv(t)
	for _, m := range []map[string]string{traps.Early, traps.Fonts} {
		for path := range m {
			t.Run(strings.TrimPrefix(path, "/trap/"), func(t *testing.T) {
				res := mustRender(t, e, Request{URL: path})
				if !strings.Contains(string(res.HTML), traps.Marker) {
					t.Fatalf("captured before the page was done (ended %s after %s):\n%s", res.Ended, res.Settle, res.HTML)
				}
				if strings.Contains(string(res.HTML), traps.Never) {
					t.Errorf("a timer the page cleared ran:\n%s", res.HTML)
				}
				if res.Partial {
					t.Errorf("partial render")
				}
				if res.Ended != EndedIdle {
					t.Errorf("ended %q, want %q (the page's signals)", res.Ended, EndedIdle)
				}
			})
		}
	}
}

// TestFontTraps renders the font traps with fonts loading: each render
// waits for its font to settle.
func TestFontTraps(t *testing.T) {
	e := getEnv(t)
	r, ctx, _ := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Timeout: 3 * time.Second,
		BlockResourceTypes: []string{"Image", "Media"}, Origin: e.r.opts.Origin})
	for path := range traps.Fonts {
		t.Run(strings.TrimPrefix(path, "/trap/"), func(t *testing.T) {
			before := e.count(traps.FontPath)
			res, err := r.Render(ctx, Request{URL: "https://" + pubHost + path})
			if err != nil {
				t.Fatal(err)
			}
			if e.count(traps.FontPath) == before {
				t.Fatalf("the page's font was never requested")
			}
			if !strings.Contains(string(res.HTML), traps.Marker) || res.Ended != EndedIdle {
				t.Fatalf("captured before the font settled (ended %s after %s):\n%s", res.Ended, res.Settle, res.HTML)
			}
		})
	}
}

// TestEndlessPagesEndBeforeTimeout: pages that never stop end by the
// quiet or idle rule, complete, not at the render timeout.
func TestEndlessPagesEndBeforeTimeout(t *testing.T) {
	e := getEnv(t)
	for path := range endlessPages {
		t.Run(strings.TrimPrefix(path, "/endless/"), func(t *testing.T) {
			res := mustRender(t, e, Request{URL: path})
			if !strings.Contains(string(res.HTML), traps.Marker) {
				t.Fatalf("content missing:\n%s", res.HTML)
			}
			if path == "/endless/hanging-fetch" {
				if res.Ended != EndedTimeout || !res.Partial {
					t.Errorf("ended %q (partial %v): a request in flight holds the page to the timeout", res.Ended, res.Partial)
				}
				return
			}
			if res.Partial || res.Ended == EndedTimeout {
				t.Errorf("ended %q (partial %v): want the quiet or idle rule", res.Ended, res.Partial)
			}
		})
	}
}

// TestStaticPageIdle: a page with nothing left to do ends by its signals.
func TestStaticPageIdle(t *testing.T) {
	e := getEnv(t)
	for _, path := range []string{"/js", "/cached", "/trap/timeout-50"} {
		res := mustRender(t, e, Request{URL: path})
		if res.Ended != EndedIdle {
			t.Errorf("%s: ended %q, want %q", path, res.Ended, EndedIdle)
		}
	}
}

// warmSlots counts the slots of the current browser's pool that hold an
// open tab.
func warmSlots(r *Renderer) (warm, all int) {
	inst := r.cur.Load()
	if inst == nil {
		return 0, 0
	}
	inst.pool.mu.Lock()
	defer inst.pool.mu.Unlock()
	for _, s := range inst.pool.slots {
		if s.tab != nil {
			warm++
		}
	}
	return warm, len(inst.pool.slots)
}

// TestTabsWarm: every tab exists, with its emulation applied, once the
// browser is healthy: at the start, after a recycle and after a crash.
func TestTabsWarm(t *testing.T) {
	e := getEnv(t)
	r, ctx, _ := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 3, RecycleAfter: 2, Origin: e.r.opts.Origin})
	check := func(when string) {
		t.Helper()
		if warm, all := warmSlots(r); all != 3 || warm != 3 {
			t.Errorf("%s: %d of %d free tabs open, want 3 of 3", when, warm, all)
		}
		inst := r.cur.Load()
		inst.pool.mu.Lock()
		defer inst.pool.mu.Unlock()
		for _, s := range inst.pool.slots {
			if s.tab != nil && s.tab.emu.width == 0 {
				t.Errorf("%s: a tab without its emulation", when)
			}
		}
	}
	check("start")

	first := r.cur.Load()
	for range 2 {
		if _, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the recycle", func() bool { c := r.cur.Load(); return c != nil && c != first })
	check("recycle")

	inst := r.cur.Load()
	if err := syscall.Kill(-inst.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relaunch", func() bool { c := r.cur.Load(); return c != nil && c != inst && r.Healthy() == nil })
	check("crash")
}

// TestWorkerPageKeepsTab: a page whose dedicated worker is still running
// when the render ends does not fail the reset (DevTools cannot close a
// dedicated worker; it ends with its document), so the tab is reused.
func TestWorkerPageKeepsTab(t *testing.T) {
	e := getEnv(t)
	mustRender(t, e, Request{URL: "/js"})
	waitResets(t, e)
	before := envTabs(e)
	for _, path := range []string{"/endless/silent-worker", "/trap/worker", "/js", "/endless/silent-worker"} {
		mustRender(t, e, Request{URL: path})
	}
	waitResets(t, e) // a reset runs after its render returned
	if after := envTabs(e); !maps.Equal(after, before) {
		t.Errorf("a tab was replaced after a page with a live worker (%d tabs before, %d after, not the same)", len(before), len(after))
	}
}

// forwardPage's 400 ms timer, once nothing else is pending, runs at once
// with Date.now moved on by the time skipped (new Date() is not moved: the
// difference shows the forward).
const forwardPage = `<!DOCTYPE html><html><body><p>start</p><script>
addEventListener('load', () => setTimeout(() => {
	document.body.insertAdjacentHTML('beforeend', '<p id="skew">skipped=' + (Date.now() - new Date().getTime() >= 300) + '</p>');
}, 400));
</script></body></html>`

func init() { pages["/forward"] = forwardPage }

// TestTimersForwarded: a short timer left alone is run ahead of its time,
// with the page's clock moved on, not waited for.
func TestTimersForwarded(t *testing.T) {
	e := getEnv(t)
	res := mustRender(t, e, Request{URL: "/forward"})
	if !strings.Contains(string(res.HTML), `<p id="skew">skipped=true</p>`) || res.Ended != EndedIdle {
		t.Errorf("ended %q: the timer was not forwarded with the clock moved on:\n%s", res.Ended, res.HTML)
	}
}

// rendererPIDs are the browser's renderer processes.
func rendererPIDs(r *Renderer) map[int]bool {
	out := map[int]bool{}
	for _, pid := range renderers(r.cur.Load().pid) {
		out[pid] = true
	}
	return out
}

// TestWarmSites: a tab warmed under the site it renders keeps the renderer
// process of its warm-up for its first render of that site (warmed under
// a site of PRISM's own, the first render starts another), and the warm-up
// page never reaches the origin.
func TestWarmSites(t *testing.T) {
	e := getEnv(t)
	for _, tc := range []struct {
		sites   []string
		newProc bool
	}{
		{[]string{"https://" + strings.ToUpper(pubHost) + ":443/some/path?q"}, false},
		{nil, true},
	} {
		hits := e.count(warmPath)
		r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Origin: e.r.opts.Origin, WarmSites: tc.sites})
		before := rendererPIDs(r)
		if _, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"}); err != nil {
			t.Fatal(err)
		}
		after := rendererPIDs(r)
		started := 0
		for pid := range after {
			if !before[pid] {
				started++
			}
		}
		if (started > 0) != tc.newProc {
			t.Errorf("warm sites %q: the first render started %d renderer processes (%d before it)", tc.sites, started, len(before))
		}
		if n := e.count(warmPath) - hits; n != 0 {
			t.Errorf("warm sites %q: the origin saw the warm-up page %d times", tc.sites, n)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWarmSitesChecked(t *testing.T) {
	for _, s := range []string{"", "ftp://site.test/", "https://", "/relative", "https://u:p@site.test/", "https://site.test:bad/"} {
		if _, err := New(Options{WarmSites: []string{s}}); err == nil {
			t.Errorf("New accepted warm site %q", s)
		}
	}
	for _, p := range []string{"a", "//evil.test/", "https://evil.test/"} {
		if _, err := New(Options{WarmSites: []string{"https://site.test/"}, WarmPath: p}); err == nil {
			t.Errorf("New accepted warm path %q", p)
		}
	}
	if _, err := New(Options{WarmPath: "/"}); err == nil {
		t.Error("New accepted a warm path without warm sites")
	}
	r, err := New(Options{WarmSites: []string{"HTTPS://Site.Test:443/a", "http://site.test:8080", "http://[::1]:80/"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://site.test" + warmPath, "http://site.test:8080" + warmPath, "http://[::1]" + warmPath}
	if !slices.Equal(r.warmURLs, want) {
		t.Errorf("warm URLs %q, want %q", r.warmURLs, want)
	}
}

// TestWarmPath: each tab renders the warm path from the origin before the
// first render (with X-Prism-Render, as a render), and what that page
// stored is cleared: the first render sees none of it. A warm path the
// origin fails does not keep the browser from serving.
func TestWarmPath(t *testing.T) {
	e := getEnv(t)
	site := []string{"https://" + pubHost + "/"}
	before := e.count("/isolation")
	r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 2, Origin: e.r.opts.Origin, WarmSites: site, WarmPath: "/isolation"})
	if n := e.count("/isolation") - before; n != 2 {
		t.Errorf("the origin saw the warm path %d times, want once per tab (2)", n)
	}
	if v, _ := e.renderHdr.Load("/isolation"); v != "1" {
		t.Errorf("warm-up request X-Prism-Render = %v, want 1", v)
	}
	for range 2 {
		res, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/isolation"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(res.HTML), "cookie=[] ls=[] ss=[]") {
			t.Errorf("a first render saw the warm-up's storage:\n%s", res.HTML)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/500", "/hang"} { // the origin failing, hanging
		r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Origin: e.r.opts.Origin, WarmSites: site, WarmPath: path})
		if _, err := r.Render(ctx, Request{URL: "https://" + pubHost + "/js"}); err != nil {
			t.Errorf("render after a failed warm-up (%s): %v", path, err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWarmPathSkippedAfterFailure: once a tab's warm-up render failed, the
// tabs not yet warmed (beyond the warmParallel warmed at once) skip
// theirs instead of waiting on the failing origin too: the origin sees
// at least one warm-up and at most warmParallel (those already under
// way when the first failed), not one per tab.
func TestWarmPathSkippedAfterFailure(t *testing.T) {
	e := getEnv(t)
	before := e.count("/500")
	runRenderer(t, Options{ChromePath: chromeBin, Tabs: warmParallel + 1, Origin: e.r.opts.Origin,
		WarmSites: []string{"https://" + pubHost + "/"}, WarmPath: "/500"})
	if n := e.count("/500") - before; n < 1 || n > warmParallel {
		t.Errorf("the origin saw the failing warm path %d times, want 1 to %d (the tabs warmed at once; the next skip it) of %d tabs",
			n, warmParallel, warmParallel+1)
	}
}

// TestAwaitIdle: the start waits while the browser's process group is
// busy, up to idleWait, and not when it is idle.
func TestAwaitIdle(t *testing.T) {
	for _, tc := range []struct {
		script, want string
	}{
		{"exec sleep 30", "browser idle after its start"},
		{"while :; do :; done", "browser still busy after its start"},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var logs strings.Builder
		inst := &instance{pid: cmd.Process.Pid, r: &Renderer{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}}
		inst.awaitIdle(context.Background())
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !strings.Contains(logs.String(), tc.want) {
			t.Errorf("%q: logged %q, want %q", tc.script, logs.String(), tc.want)
		}
	}
}

// Pages that ask the hook themselves, with no margin, while work split in
// messages they post to themselves runs: the hook must not answer idle
// between two messages (with no margin, only the message being pending
// holds it). Each writes the hook's answer and whether its work was done
// then, and says it is ready (the render waits for that, not for its own
// question to the hook). The unstarted port's message is never
// delivered: it holds the hook for messageMaxMS, not until its wait ends.
var messagePages = map[string]string{
	"/msg/channel": `ch = new MessageChannel(); ch.port1.onmessage = step; post = () => ch.port2.postMessage(0);`,
	"/msg/window":  `addEventListener('message', (e) => { if (e.data === 'tick') step(); }); post = () => postMessage('tick', '*');`,
	"/msg/started": `ch = new MessageChannel(); ch.port1.addEventListener('message', step); ch.port1.start(); post = () => ch.port2.postMessage(0);`,
}

const messageVerdict = `<p id="verdict">' + v + ':' + (n === 20) + '</p>`

func init() {
	for path, setup := range messagePages {
		pages[path] = `<!DOCTYPE html><html><body><p>start</p><script>
window.prerenderReady = false;
let n = 0, ch, post;
const busy = (ms) => { const end = performance.now() + ms; while (performance.now() < end) {} };
const step = () => { busy(3); if (++n < 20) post(); };
` + setup + `
addEventListener('load', () => {
	post();
	` + doneKey + `(0, 2000).then((v) => { document.body.insertAdjacentHTML('beforeend', '` + messageVerdict + `'); window.prerenderReady = true; });
});
</script></body></html>`
	}
	pages["/msg/unstarted"] = `<!DOCTYPE html><html><body><p>start</p><script>
window.prerenderReady = false;
addEventListener('load', () => {
	const ch = new MessageChannel(); ch.port1.postMessage('nobody listens');
	const t0 = performance.now();
	` + doneKey + `(0, 2000).then((v) => { document.body.insertAdjacentHTML('beforeend', '<p id="verdict">' + v + ':' + (performance.now() - t0 >= ` + fmt.Sprint(messageMaxMS-20) + `) + '</p>'); window.prerenderReady = true; });
});
</script></body></html>`
}

// TestMessagesPending: a message the page posted to itself is pending
// until delivered (or for messageMaxMS when it never is).
func TestMessagesPending(t *testing.T) {
	e := getEnv(t)
	for _, path := range []string{"/msg/channel", "/msg/window", "/msg/started", "/msg/unstarted"} {
		res := mustRender(t, e, Request{URL: path})
		if !strings.Contains(string(res.HTML), `<p id="verdict">idle:true</p>`) {
			t.Errorf("%s: the hook answered before the page's messages were delivered (or never): %s", path, res.HTML)
		}
	}
}

// TestBrowserIconNotFetched: the browser's own request for /favicon.ico
// never reaches the origin (nor holds up the render); a page's own fetch
// of it does. (A browser asks once per tab for an icon it was refused: a
// renderer of its own.)
func TestBrowserIconNotFetched(t *testing.T) {
	e := getEnv(t)
	r, ctx, _ := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Origin: e.r.opts.Origin})
	before := e.count("/favicon.ico")
	for _, path := range []string{"/js", "/js", "/icon-fetch"} {
		if _, err := r.Render(ctx, Request{URL: "https://" + pubHost + path}); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.count("/favicon.ico") - before; n != 1 {
		t.Errorf("the origin saw /favicon.ico %d times, want once: the page's own fetch of it", n)
	}
}

func init() {
	pages["/icon-fetch"] = `<!DOCTYPE html><html><body><script>fetch('/favicon.ico').then(() => document.body.insertAdjacentHTML('beforeend', '<p>fetched</p>'))</script></body></html>`
}

// Pages that keep posting or animating without content to wait for end
// before the render timeout; a frame that keeps posting to its parent is
// let go by the signals (idle).
var letGoPages = map[string]string{
	// a same-origin frame posting to its parent every 50 ms (a height
	// reporter): counted by the parent's postMessage, delivered to it
	"/letgo/frame-posts": `<!DOCTYPE html><html><body><p>start</p><iframe srcdoc="<script>setInterval(() => parent.postMessage('h', '*'), 50)</script>"></iframe>
<script>addEventListener('message', () => {});</script><p>done</p></body></html>`,
	// short animations, each started when the one before ends (they hold
	// the page animationMaxMS at most)
	"/letgo/animation-chain": `<!DOCTYPE html><html><body><p id="a">start</p><script>
const a = document.getElementById('a');
(function next() { a.animate([{opacity: 0}, {opacity: 1}], 100).onfinish = next; })();
</script><p>done</p></body></html>`,
}

func init() {
	for path, body := range letGoPages {
		pages[path] = body
	}
}

func TestSignalsLetGo(t *testing.T) {
	e := getEnv(t)
	for path := range letGoPages {
		res := mustRender(t, e, Request{URL: path})
		if res.Ended == EndedTimeout || res.Partial || !strings.Contains(string(res.HTML), "<p>done</p>") {
			t.Errorf("%s: ended %q (partial %v): want it let go before the timeout", path, res.Ended, res.Partial)
		}
		if path == "/letgo/frame-posts" && res.Ended != EndedIdle {
			t.Errorf("%s: ended %q, want %q: a frame's posts to its parent are delivered to it", path, res.Ended, EndedIdle)
		}
	}
}

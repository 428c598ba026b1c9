// Package traps holds the pages that test a render's done-detection:
// pages whose content arrives after their document loaded, in the ways
// real pages do it (Early, Fonts), and pages that never stop doing
// something (Endless). Every page ends by writing Marker; a render that
// captures one before the page is done loses it. Tests of the prerender
// package and the e2e tests serve them with Serve.
package traps

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Marker is what every page writes last.
const Marker = `<p id="done">complete</p>`

// Never is what a page writes only if a timer it cleared ran anyway.
const Never = "cancelled timer ran"

const writeDone = `document.body.insertAdjacentHTML('beforeend', '` + Marker + `')`

// busy is a function the pages call to hold the main thread for ms, as
// rendering a list or hydrating does.
const busy = `function busy(ms) { const end = performance.now() + ms; while (performance.now() < end) {} }`

// Early are trap pages, by path, with content that arrives after the load.
var Early = pagesOf(map[string]string{
	// fetch -> render (80 ms of work) -> fetch -> render -> fetch -> render
	"/trap/fetch-chain": `<script>
(async () => {
	for (const ms of [40, 80, 60]) {
		const t = await (await fetch('/slow/step?ms=' + ms)).text();
		busy(80);
		document.body.insertAdjacentHTML('beforeend', '<p>' + t + ms + '</p>');
	}
	` + writeDone + `;
})();</script>`,
	// JSON, then a timer, then another fetch
	"/trap/fetch-timer-fetch": `<script>
fetch('/slow/a.json?ms=30').then(r => r.json()).then(() => new Promise(r => setTimeout(r, 120)))
	.then(() => fetch('/slow/b?ms=30')).then(r => r.text()).then(() => { ` + writeDone + ` });
</script>`,
	"/trap/xhr-chain": `<script>
const x = new XMLHttpRequest(); x.open('GET', '/slow/one?ms=50');
x.onload = () => { const y = new XMLHttpRequest(); y.open('GET', '/slow/two?ms=50'); y.onload = () => setTimeout(() => { ` + writeDone + ` }, 60); y.send(); };
x.send();
</script>`,
	"/trap/timeout-50":  `<script>setTimeout(() => { ` + writeDone + ` }, 50)</script>`,
	"/trap/timeout-150": `<script>addEventListener('load', () => setTimeout(() => { ` + writeDone + ` }, 150))</script>`,
	"/trap/timeout-300": `<script>addEventListener('load', () => setTimeout(() => { ` + writeDone + ` }, 300))</script>`,
	// three nested timers, 100 ms each
	"/trap/timeout-nested": `<script>setTimeout(() => setTimeout(() => setTimeout(() => { ` + writeDone + ` }, 100), 100), 100)</script>`,
	// a debounce that checks the clock when its timer fires, as lodash's
	// does (it sets a new timer for what is left of its delay)
	"/trap/debounce-clock": `<script>
const start = Date.now();
(function expired() { const since = Date.now() - start; if (since >= 250) { ` + writeDone + ` } else setTimeout(expired, 250 - since); })();
</script>`,
	"/trap/perf-clock": `<script>
const t0 = performance.now();
addEventListener('load', () => (function tick() { if (performance.now() - t0 >= 300) { ` + writeDone + ` } else setTimeout(tick, 300 - (performance.now() - t0)); })());
</script>`,
	// a timer the page clears when another one fired first
	"/trap/timer-race": `<script>
const bad = setTimeout(() => document.body.insertAdjacentHTML('beforeend', '<p>` + Never + `</p>'), 200);
setTimeout(() => { clearTimeout(bad); setTimeout(() => { ` + writeDone + ` }, 100); }, 100);
</script>`,
	// a timer a later one replaces (a debounce)
	"/trap/debounce": `<script>let id = setTimeout(() => {}, 50); clearTimeout(id); id = setTimeout(() => { ` + writeDone + ` }, 200)</script>`,
	// data loaded from an idle callback, rendered in the next one
	"/trap/idle-callback": `<script>
addEventListener('load', () => requestIdleCallback(async () => {
	const t = await (await fetch('/slow/idle?ms=60')).text();
	busy(60);
	requestIdleCallback(() => { ` + writeDone + ` });
}));
</script>`,
	"/trap/idle-then-timer": `<script>requestIdleCallback(() => setTimeout(() => { ` + writeDone + ` }, 200))</script>`,
	// a worker computes for 250 ms, the page writes its answer
	"/trap/worker": `<script>
const src = 'onmessage = (e) => { const end = Date.now() + 250; while (Date.now() < end) {} postMessage(e.data * 2); }';
const wk = new Worker(URL.createObjectURL(new Blob([src], {type: 'text/javascript'})));
wk.onmessage = (e) => { ` + writeDone + ` };
addEventListener('load', () => wk.postMessage(21));
</script>`,
	// a script and a module chunk added after the load, slow to arrive
	"/trap/script-added": `<script>addEventListener('load', () => { const s = document.createElement('script'); s.src = '/slow/late.js?ms=120'; document.head.appendChild(s); })</script>`,
	"/trap/import":       `<script>addEventListener('load', () => { import('/slow/chunk.mjs?ms=100').then((m) => m.render()); })</script>`,
	// large scripts (bigCode: 0.5 MB to compile): a module chunk imported
	// while the document loads, which the load does not wait for; a
	// classic script the load handler adds, before the done-detection
	// watches the document; a classic script the page itself loads, which
	// writes its content once it ran
	"/trap/import-big":       `<script>import('/slow/big.mjs?ms=0').then((m) => m.render());</script>`,
	"/trap/script-added-big": `<script>addEventListener('load', () => { const s = document.createElement('script'); s.src = '/slow/big.js?ms=0'; document.head.appendChild(s); })</script>`,
	"/trap/script-big":       `<script src="/slow/big.js?ms=0"></script>`,
	// a stylesheet added late, content once it applied
	"/trap/stylesheet": `<script>addEventListener('load', () => { const l = document.createElement('link'); l.rel = 'stylesheet'; l.href = '/slow/late.css?ms=150';
	l.onload = () => setTimeout(() => { ` + writeDone + ` }, 100); document.head.appendChild(l); })</script>`,
	// two animation frames, then a timer (the tab is shown for the frames)
	"/trap/frames": `<script>requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => { ` + writeDone + ` }, 100)))</script>`,
	// work split in MessageChannel tasks (React's scheduler): 20 of 3 ms
	// (short enough to stay far from the quiet rule on a loaded machine)
	"/trap/message-channel": `<script>
fetch('/slow/data?ms=40').then(r => r.text()).then(() => {
	const ch = new MessageChannel(); let n = 0;
	ch.port1.onmessage = () => { busy(3); if (++n < 20) ch.port2.postMessage(0); else { ` + writeDone + ` } };
	ch.port2.postMessage(0);
});</script>`,
	// the same through the window (setImmediate shims), and a timer: the
	// page is done once both are (the timer may run before the chain ends
	// on a loaded machine, in a browser too)
	"/trap/post-message": `<script>
fetch('/slow/data?ms=40').then(r => r.text()).then(() => {
	let n = 0, chain = false, timer = false;
	const end = () => { if (chain && timer) { ` + writeDone + ` } };
	addEventListener('message', (e) => { if (e.data !== 'tick') return; busy(3); if (++n < 20) postMessage('tick', '*'); else { chain = true; end(); } });
	postMessage('tick', '*');
	setTimeout(() => { timer = true; end(); }, 150);
});</script>`,
	// a CSS transition started by a timer, content on its end (the page is
	// shown for it: a hidden page runs none)
	"/trap/transition": `<style>#fade { transition: opacity 120ms }</style><div id="fade">x</div><script>
const f = document.getElementById('fade');
f.addEventListener('transitionend', () => { ` + writeDone + ` });
setTimeout(() => { getComputedStyle(f).opacity; f.style.opacity = '0.5'; }, 30);
</script>`,
	// a shadow root filled by a timer
	"/trap/shadow": `<script>
customElements.define('late-card', class extends HTMLElement { connectedCallback() { const r = this.attachShadow({mode: 'open'});
	setTimeout(() => { r.innerHTML = '<p>shadow content</p>'; setTimeout(() => { ` + writeDone + ` }, 80); }, 120); } });
document.body.appendChild(document.createElement('late-card'));
</script>`,
	// scheduler.postTask with a delay, then a fetch
	"/trap/post-task": `<script>
(globalThis.scheduler ? scheduler.postTask(() => 1, {priority: 'background', delay: 100}) : new Promise(r => setTimeout(r, 100)))
	.then(() => fetch('/slow/pt?ms=50')).then(r => r.text()).then(() => { ` + writeDone + ` });
</script>`,
	// a microtask chain a timer starts: all of it runs before the next task
	"/trap/microtasks": `<script>setTimeout(async () => { let p = Promise.resolve(0); for (let i = 0; i < 1000; i++) p = p.then((v) => v + 1);
	await p; await new Promise(r => setTimeout(r, 100)); ` + writeDone + ` }, 60)</script>`,
})

// Fonts are trap pages that render once a web font, slow to arrive,
// settled (it fails to decode: the page goes on either way). With fonts
// blocked (the default block_resource_types) they are done at once.
var Fonts = pagesOf(map[string]string{
	"/trap/font-load": `<script>
new FontFace('Slow', 'url(/slow/font.woff2?ms=250)').load().catch(() => {}).then(() => { ` + writeDone + ` });
</script>`,
	"/trap/fonts-ready": `<style>@font-face { font-family: Slow2; src: url(/slow/font.woff2?ms=250&f=2); } body { font-family: Slow2, sans-serif }</style>
<p>text in a web font</p><script>addEventListener('load', () => { document.body.offsetHeight; document.fonts.ready.then(() => { ` + writeDone + ` }); })</script>`,
	"/trap/font-status": `<style>@font-face { font-family: Slow3; src: url(/slow/font.woff2?ms=250&f=3); } p { font-family: Slow3 }</style>
<p>text</p><script>addEventListener('load', () => { document.body.offsetHeight;
	(function c() { if (document.fonts.status === 'loaded') { ` + writeDone + ` } else setTimeout(c, 20); })(); })</script>`,
})

// FontPath is the URL path every font of Fonts is fetched at.
const FontPath = "/slow/font.woff2"

// Endless are pages that keep doing something forever, after writing
// Marker: they end by the quiet rule (or the idle one, when what they do
// is not waited for), never at the render timeout. HookKey is the name of
// the page function PRISM's done hook defines, which one of them attacks.
func Endless(hookKey string) map[string]string {
	return pagesOf(map[string]string{
		"/endless/interval":   `<script>let n = 0; setInterval(() => { document.title = 'tick ' + n++; }, 30); ` + writeDone + `</script>`,
		"/endless/poll-timer": `<script>(function poll() { document.body.dataset.n = (+document.body.dataset.n || 0) + 1; setTimeout(poll, 40); })(); ` + writeDone + `</script>`,
		"/endless/raf-loop":   `<script>(function f(t) { document.body.style.opacity = String(0.5 + (t % 1000) / 2000); requestAnimationFrame(f); })(0); ` + writeDone + `</script>`,
		"/endless/mutations":  `<script>let n = 0; setInterval(() => { document.body.setAttribute('data-n', n++); }, 10); ` + writeDone + `</script>`,
		"/endless/long-timer": `<script>setTimeout(() => { document.body.insertAdjacentHTML('beforeend', '<p>much later</p>'); }, 60000); ` + writeDone + `</script>`,
		"/endless/silent-worker": `<script>new Worker(URL.createObjectURL(new Blob(['onmessage = () => {}'], {type: 'text/javascript'})));
` + writeDone + `</script>`,
		"/endless/hanging-fetch": `<script>fetch('/slow/never?ms=600000'); ` + writeDone + `</script>`,
		"/endless/hook-broken": `<script>try { Object.defineProperty(window, '` + hookKey + `', {value: () => new Promise(() => {})}); } catch (e) {}
Map.prototype.set = () => { throw new Error('x') }; Promise.prototype.then = function () { return this };
window.setTimeout = () => 0; ` + writeDone + `</script>`,
	})
}

func pagesOf(bodies map[string]string) map[string]string {
	m := make(map[string]string, len(bodies))
	for path, body := range bodies {
		m[path] = `<!DOCTYPE html><html><head><title>trap</title><script>` + busy + `</script></head><body><p>start</p>` + body + `</body></html>`
	}
	return m
}

// bigCode is half a megabyte of script that runs: functions V8 must
// parse, and a call of each.
var bigCode = func() string {
	var b strings.Builder
	b.WriteString("var bigSum = 0;\n")
	for i := 0; b.Len() < 512<<10; i++ {
		n := strconv.Itoa(i)
		b.WriteString("function big" + n + "(a) { var s = 0; for (var j = 0; j < 3; j++) { s += (a * " + n + " + j) % 7; } return s + '" + n + "'.length; }\nbigSum += big" + n + "(" + n + ");\n")
	}
	return b.String()
}()

// slowBodies are what /slow/NAME serves (NAME itself otherwise).
var slowBodies = map[string]string{
	"big.js":     bigCode + writeDone,
	"big.mjs":    bigCode + `export function render() { ` + writeDone + ` }`,
	"late.js":    writeDone,
	"chunk.mjs":  `export function render() { ` + writeDone + ` }`,
	"late.css":   `p { color: red }`,
	"a.json":     `{"a": 1}`,
	"font.woff2": "not a font",
}

// Serve answers /slow/NAME?ms=N (slowBodies[NAME] after N ms) and the
// paths of pages (each a page's HTML); it reports whether it answered.
func Serve(w http.ResponseWriter, r *http.Request, pages ...map[string]string) bool {
	if name, ok := strings.CutPrefix(r.URL.Path, "/slow/"); ok {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		}
		body, ok := slowBodies[name]
		if !ok {
			body = name
		}
		w.Header().Set("Content-Type", contentType(name))
		io.WriteString(w, body)
		return true
	}
	for _, m := range pages {
		if body, ok := m[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, body)
			return true
		}
	}
	return false
}

func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".js"), strings.HasSuffix(name, ".mjs"):
		return "text/javascript"
	case strings.HasSuffix(name, ".css"):
		return "text/css"
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	case strings.HasSuffix(name, ".woff2"):
		return "font/woff2"
	}
	return "text/plain"
}

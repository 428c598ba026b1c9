package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Pages whose content a browser shows but a naive capture loses.
var fidelityPages = map[string]string{
	// Text only in open shadow roots: nested roots, and a slot.
	"/shadow": `<!DOCTYPE html><html><head><title>shadow</title></head><body>
<my-card><span slot="title">Slotted title</span></my-card>
<script>
customElements.define('my-inner', class extends HTMLElement { constructor() { super(); this.attachShadow({mode: 'open'}).innerHTML = '<b>inner shadow text</b>'; } });
customElements.define('my-card', class extends HTMLElement { constructor() { super(); this.attachShadow({mode: 'open'}).innerHTML = '<h2><slot name="title"></slot></h2><p>card shadow text</p><my-inner></my-inner><script>x()<\/script>'; } });
customElements.define('my-closed', class extends HTMLElement { constructor() { super(); this.attachShadow({mode: 'closed'}).innerHTML = '<p>closed text</p>'; } });
document.body.appendChild(document.createElement('my-closed'));
</script></body></html>`,
	// Declarative shadow DOM sent by the origin.
	"/dsd": `<!DOCTYPE html><html><body><div id="host"><template shadowrootmode="open"><p>declarative shadow text</p></template></div></body></html>`,
	// Workers, from blob: and from a URL: the page is done long before the timeout.
	"/workers": `<!DOCTYPE html><html><body><script>
const b = new Worker(URL.createObjectURL(new Blob(['postMessage("from blob")'], {type: 'text/javascript'})));
const u = new Worker('/worker.js');
document.body.insertAdjacentHTML('beforeend', '<p>page with workers</p>');
</script></body></html>`,
	"/worker.js": `postMessage('from url')`,
	// Sections that load when scrolled into view, at 3 and 6 viewport heights.
	"/lazy": `<!DOCTYPE html><html><body><div style="height: 300vh">top</div><section id="s3">placeholder 3</section>
<div style="height: 300vh"></div><section id="s6">placeholder 6</section><div style="height: 50vh"></div><script>
const io = new IntersectionObserver((es) => { for (const e of es) if (e.isIntersecting) {
	io.unobserve(e.target); fetch('/section?' + e.target.id).then(r => r.text()).then(t => { e.target.textContent = t; }); } });
for (const s of document.querySelectorAll('section')) io.observe(s);
</script></body></html>`,
	// Form state set by script.
	"/form": `<!DOCTYPE html><html><body><form>
<input id="q" name="q"><textarea id="t"></textarea><input id="c" type="checkbox"><input id="r1" type="radio" name="r" checked><input id="r2" type="radio" name="r">
<select id="s"><option>one</option><option>two</option></select><input id="p" type="password"></form><script>
q.value = 'search query'; t.value = 'typed text'; c.checked = true; r2.checked = true; s.value = 'two'; p.value = 'secret';
</script></body></html>`,
	// A head built by script, an empty body.
	"/head-only": `<!DOCTYPE html><html><head><script>
document.title = 'Built title';
for (const [k, v] of [['name', 'description'], ['property', 'og:title']]) { const m = document.createElement('meta'); m.setAttribute(k, v); m.content = 'built ' + v; document.head.appendChild(m); }
const l = document.createElement('link'); l.rel = 'canonical'; l.href = 'https://` + siteHost + `/head-only'; document.head.appendChild(l);
</script></head><body></body></html>`,
	// Really empty: blank, the crawler gets the origin's page.
	"/empty": `<!DOCTYPE html><html><head><title>shell</title></head><body><script>var a = 1</script></body></html>`,
	// Two status metas: the first wins; both leave the served HTML.
	"/two-status": `<!DOCTYPE html><html><head><meta name="prerender-status-code" content="404"><meta name="prerender-status-code" content="500">
<meta name="prerender-header" content="X-Robots-Tag: noindex"></head><body><p>not here</p></body></html>`,
	// A real web-component library from npm (testdata/relative-time-element):
	// the formatted date exists only in each element's shadow root.
	"/library": `<!DOCTYPE html><html lang="en"><head><script type="module" src="/rte.js"></script></head><body>
<relative-time datetime="2014-04-01T16:30:00Z" format="datetime" year="numeric" month="long" day="numeric" time-zone="UTC" lang="en">fallback one</relative-time>
<relative-time datetime="1999-12-31T12:00:00Z" format="datetime" year="numeric" month="long" day="numeric" time-zone="UTC" lang="en">fallback two</relative-time>
</body></html>`,
	// The scheme it renders at.
	"/scheme": `<!DOCTYPE html><html><body><script>document.body.insertAdjacentHTML('beforeend', '<p>protocol=' + location.protocol + '</p>')</script></body></html>`,
	// The hashbang state a page's router reads.
	"/app": `<!DOCTYPE html><html><body><script>document.body.insertAdjacentHTML('beforeend', '<p>route=' + location.hash + '</p>')</script></body></html>`,
	// Content the page fetches from an origin that checks Host.
	"/host-check": `<!DOCTYPE html><html><body><script>fetch('/host-data').then(r => r.text()).then(t => document.body.insertAdjacentHTML('beforeend', '<p>' + t + '</p>'))</script></body></html>`,
}

// sjisPage is "<p>日本語</p>" in Shift_JIS, declaring its charset.
var sjisPage = append(append([]byte(`<!DOCTYPE html><html><head><meta charset="Shift_JIS"></head><body><p>`),
	0x93, 0xfa, 0x96, 0x7b, 0x8c, 0xea), []byte(`</p></body></html>`)...)

func TestFidelity(t *testing.T) {
	origin := newOrigin(t)
	for path, body := range fidelityPages {
		origin.Mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(path, "/host-") && r.Host != siteHost {
				http.Error(w, "unknown host "+r.Host, http.StatusNotFound)
				return
			}
			ct := "text/html; charset=utf-8"
			if strings.HasSuffix(path, ".js") {
				ct = "text/javascript"
			}
			w.Header().Set("Content-Type", ct)
			io.WriteString(w, body)
		})
	}
	origin.Mux.HandleFunc("/section", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "section "+r.URL.RawQuery+" loaded")
	})
	origin.Mux.HandleFunc("/host-data", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != siteHost {
			http.Error(w, "unknown host", http.StatusNotFound)
			return
		}
		io.WriteString(w, "data for "+r.Host)
	})
	rte, err := os.ReadFile("testdata/relative-time-element/bundle.js")
	if err != nil {
		t.Fatal(err)
	}
	origin.Mux.HandleFunc("/rte.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write(rte)
	})
	origin.Mux.HandleFunc("/sjis", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=Shift_JIS")
		w.Write(sjisPage)
	})
	c := newConf(t, origin.URL)
	c.Timeout = "8s"
	c.TrustedProxies = `["127.0.0.1/32"]`
	p := startPrism(t, c)
	get := func(path string) Response {
		t.Helper()
		r := p.Get(path, desktopBot)
		if r.Header.Get("X-Prism-Cache") != "MISS" {
			t.Errorf("%s: X-Prism-Cache %q, want MISS (rendered)", path, r.Header.Get("X-Prism-Cache"))
		}
		return r
	}

	t.Run("shadow DOM", func(t *testing.T) {
		r := get("/shadow")
		contains(t, "/shadow", r.Body, `<template shadowrootmode="open">`, "card shadow text", "inner shadow text", "Slotted title", `<slot name="title">`)
		if strings.Contains(r.Body, "x()") || strings.Contains(r.Body, "closed text") {
			t.Errorf("/shadow: a script in a shadow root or a closed root's text was served: %s", r.Body)
		}
		r = get("/library")
		contains(t, "/library", r.Body, `<template shadowrootmode="open"><span part="root">Tue, April 1, 2014</span></template>`,
			`<template shadowrootmode="open"><span part="root">Fri, December 31, 1999</span></template>`)
		r = get("/dsd")
		contains(t, "/dsd", r.Body, `<template shadowrootmode="open"><p>declarative shadow text</p></template>`)
	})
	t.Run("workers", func(t *testing.T) {
		start := time.Now()
		r := get("/workers")
		if d := time.Since(start); d > 4*time.Second || r.Header.Get("X-Prism-Partial") != "" {
			t.Errorf("/workers: %v, partial %q; want well inside the 8s timeout, complete", d, r.Header.Get("X-Prism-Partial"))
		}
		contains(t, "/workers", r.Body, "page with workers")
	})
	t.Run("lazy sections", func(t *testing.T) {
		r := get("/lazy")
		contains(t, "/lazy", r.Body, "section s3 loaded", "section s6 loaded")
	})
	t.Run("form state", func(t *testing.T) {
		r := get("/form")
		contains(t, "/form", r.Body, `value="search query"`, `<textarea id="t">typed text</textarea>`, `id="c" type="checkbox" checked=""`,
			`id="r2" type="radio" name="r" checked=""`, `<option selected="">two</option>`)
		if strings.Contains(r.Body, "secret") || strings.Contains(r.Body, `id="r1" type="radio" name="r" checked`) {
			t.Errorf("/form: a password or a stale radio state was served: %s", r.Body)
		}
	})
	t.Run("script-built head", func(t *testing.T) {
		r := get("/head-only")
		contains(t, "/head-only", r.Body, "<title>Built title</title>", `content="built og:title"`, `content="built description"`, `rel="canonical"`)
		r = p.Get("/empty", desktopBot)
		if r.Header.Get("X-Prism-Cache") != "BYPASS" {
			t.Errorf("/empty: %s, want BYPASS (blank)", r.Header.Get("X-Prism-Cache"))
		}
	})
	t.Run("status metas", func(t *testing.T) {
		r := get("/two-status")
		if r.Status != 404 || r.Header.Get("X-Robots-Tag") != "noindex" || strings.Contains(r.Body, "prerender-") {
			t.Errorf("/two-status: %d %v %s", r.Status, r.Header, r.Body)
		}
	})
	t.Run("charset", func(t *testing.T) {
		r := get("/sjis")
		contains(t, "/sjis", r.Body, "<p>日本語</p>", `<meta charset="utf-8">`)
		if ct := r.Header.Get("Content-Type"); !strings.Contains(strings.ToLower(ct), "utf-8") {
			t.Errorf("/sjis: Content-Type %q", ct)
		}
	})
	t.Run("origin that checks Host", func(t *testing.T) {
		r := get("/host-check")
		if r.Status != 200 {
			t.Errorf("/host-check: %d", r.Status)
		}
		contains(t, "/host-check", r.Body, "data for "+siteHost)
	})
	t.Run("scheme from a trusted proxy", func(t *testing.T) {
		r := p.Get("/scheme?a", desktopBot, "X-Forwarded-Proto: http")
		contains(t, "/scheme as http", r.Body, "protocol=http:")
		r = p.Get("/scheme?b", desktopBot)
		contains(t, "/scheme", r.Body, "protocol=https:")
	})
	t.Run("escaped fragment", func(t *testing.T) {
		r := get("/app?_escaped_fragment_=/products/1")
		contains(t, "/app?_escaped_fragment_", r.Body, "route=#!/products/1")
	})
	t.Run("render every dimension", func(t *testing.T) {
		code, m := p.admin("POST", "/render", `{"url":"/both"}`, p.Conf.AdminToken)
		if code != 200 || len(m["dimensions"].([]any)) != 2 {
			t.Fatalf("/render: %d %v", code, m)
		}
		for _, ua := range []string{desktopBot, mobileBot} {
			if got := p.cacheState("/both", ua); got != "HIT" {
				t.Errorf("after /render, %.30s: %s, want HIT", ua, got)
			}
		}
	})
}

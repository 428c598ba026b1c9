package prerender

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// deploys is the shared test origin's versioned site under /deploy/NAME/:
// a page whose script and stylesheet are served fresh for an hour (as a
// static host serves a bundle), the script with an ETag, the stylesheet
// with a Last-Modified only, a module script with an ETag; three more
// scripts with an ETag are not to be reused unasked: one marked no-store,
// one large enough to be streamed, one whose 304 says no-store. A deploy bumps NAME's
// version, which changes every body and validator.
var deploys = struct {
	mu      sync.Mutex
	version map[string]int
	sites   int
	log     []deployHit
}{version: map[string]int{}}

// deployHit is one request the deploy origin answered.
type deployHit struct {
	path        string
	conditional bool // carried If-None-Match or If-Modified-Since
	status      int
}

// deploySite returns the path ("/deploy/NAME/") of a site no test used
// before (tests may run more than once: -count).
func deploySite() string {
	deploys.mu.Lock()
	defer deploys.mu.Unlock()
	deploys.sites++
	return fmt.Sprintf("/deploy/s%d/", deploys.sites)
}

// deploy bumps the version of site (as deploySite gave it).
func deploy(site string) {
	deploys.mu.Lock()
	defer deploys.mu.Unlock()
	deploys.version[strings.Trim(strings.TrimPrefix(site, "/deploy/"), "/")]++
}

// deployHits returns the requests for path answered so far.
func deployHits(path string) []deployHit {
	deploys.mu.Lock()
	defer deploys.mu.Unlock()
	var out []deployHit
	for _, h := range deploys.log {
		if h.path == path {
			out = append(out, h)
		}
	}
	return out
}

// deployOrigin serves /deploy/NAME/{page,app.js,app.css,mod.js,nostore.js,big.js,turn.js,data.json};
// it reports whether it answered.
func deployOrigin(w http.ResponseWriter, r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/deploy/")
	if !ok {
		return false
	}
	name, file, _ := strings.Cut(rest, "/")
	deploys.mu.Lock()
	v := deploys.version[name] + 1
	deploys.mu.Unlock()
	etag := fmt.Sprintf(`"%s-v%d"`, name, v)
	modified := time.Date(2026, 1, 1, v, 0, 0, 0, time.UTC)
	h := w.Header()
	h.Set("Cache-Control", "public, max-age=3600")
	var body, ct string
	useETag, useModified := false, false
	switch file {
	case "page":
		h.Del("Cache-Control")
		ct = "text/html; charset=utf-8"
		body = `<!DOCTYPE html><html><head><link rel="stylesheet" href="app.css"></head><body>
<p id="x">x</p><script src="app.js"></script><script src="nostore.js"></script><script src="big.js"></script>
<script type="module" src="mod.js"></script><script src="turn.js"></script>
<script>fetch('data.json', {cache: 'force-cache'}).then(r => r.json()).then(d => document.body.insertAdjacentHTML('beforeend', '<p>data=v' + d.v + '</p>'));</script></body></html>`
	case "app.js":
		ct, useETag = "text/javascript", true
		body = fmt.Sprintf(`document.body.insertAdjacentHTML('beforeend',
  '<p>js=v%d css=' + getComputedStyle(document.getElementById('x')).width + '</p>');`, v)
	case "app.css":
		ct, useModified = "text/css", true
		body = fmt.Sprintf(`#x { display: inline-block; width: %dpx }`, 10*v)
	case "nostore.js":
		h.Set("Cache-Control", "no-store")
		ct, useETag = "text/javascript", true
		body = fmt.Sprintf(`document.body.insertAdjacentHTML('beforeend', '<p>nostore=v%d</p>');`, v)
	case "mod.js":
		ct, useETag = "text/javascript", true
		body = fmt.Sprintf(`document.body.insertAdjacentHTML('beforeend', '<p>mod=v%d</p>');`, v)
	case "turn.js": // its 304s say no-store
		ct, useETag = "text/javascript", true
		body = fmt.Sprintf(`document.body.insertAdjacentHTML('beforeend', '<p>turn=v%d</p>');`, v)
		if r.Header.Get("If-None-Match") == etag {
			h.Set("Cache-Control", "no-store")
		}
	case "data.json": // asked for with cache: 'force-cache'
		ct, useETag = "application/json", true
		body = fmt.Sprintf(`{"v": %d}`, v)
	case "big.js": // past streamThreshold: streamed
		ct, useETag = "text/javascript", true
		body = "/*" + strings.Repeat("x", streamThreshold+1) + "*/" +
			fmt.Sprintf(`document.body.insertAdjacentHTML('beforeend', '<p>big=v%d</p>');`, v)
	default:
		w.WriteHeader(http.StatusNotFound)
		return true
	}
	h.Set("Content-Type", ct)
	conditional := r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != ""
	status := http.StatusOK
	if useETag {
		h.Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			status = http.StatusNotModified
		}
	}
	if useModified {
		h.Set("Last-Modified", modified.Format(http.TimeFormat))
		if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !modified.After(t) && r.Header.Get("If-None-Match") == "" {
			status = http.StatusNotModified
		}
	}
	deploys.mu.Lock()
	deploys.log = append(deploys.log, deployHit{path: r.URL.Path, conditional: conditional, status: status})
	deploys.mu.Unlock()
	w.WriteHeader(status)
	if status == http.StatusOK {
		fmt.Fprint(w, body)
	}
	return true
}

// The browser keeps a page's subresources across renders but uses one only
// once the origin confirmed it on that render (a 304 to the request naming
// its validators); a deploy is seen by the next render, and what the origin
// marked no-store, or gave no validator, is fetched whole every time.
func TestRevalidatedAcrossRenders(t *testing.T) {
	e := getEnv(t)
	site := deploySite()
	page := Request{URL: site + "page"}
	kept, changed := e.r.metrics.kept.Get(), e.r.metrics.changed.Get()
	const renders = 3
	for i := range renders {
		html := string(mustRender(t, e, page).HTML)
		for _, want := range []string{"js=v1 css=10px", "mod=v1", "nostore=v1", "big=v1", "turn=v1", "data=v1"} {
			if !strings.Contains(html, want) {
				t.Fatalf("render %d: no %q in %s", i+1, want, html)
			}
		}
	}
	for _, file := range []string{"app.js", "app.css", "mod.js"} {
		hits := deployHits(site + file)
		if len(hits) != renders {
			t.Fatalf("%s: %d requests in %d renders, want one a render: %+v", file, len(hits), renders, hits)
		}
		if hits[0].conditional || hits[0].status != http.StatusOK {
			t.Errorf("%s: first request %+v, want an unconditional 200", file, hits[0])
		}
		for _, h := range hits[1:] {
			if !h.conditional || h.status != http.StatusNotModified {
				t.Errorf("%s: later request %+v, want a conditional one answered 304", file, h)
			}
		}
	}
	wantWhole(t, site, renders, "nostore.js", "big.js") // no-store; streamed

	// A fetch with cache: 'force-cache' is asked of the origin every render
	// (the browser's HTTP cache never holds a response PRISM handed over).
	if hits := deployHits(site + "data.json"); len(hits) != renders {
		t.Errorf("data.json (force-cache): %d requests in %d renders, want one a render: %+v", len(hits), renders, hits)
	}

	// turn.js: fetched whole, then asked (its 304 says no-store), then
	// fetched whole again.
	want := []deployHit{{site + "turn.js", false, 200}, {site + "turn.js", true, 304}, {site + "turn.js", false, 200}}
	if hits := deployHits(site + "turn.js"); fmt.Sprint(hits) != fmt.Sprint(want) {
		t.Errorf("turn.js: %+v, want %+v", hits, want)
	}
	// Three kept copies (app.js, app.css, mod.js) confirmed on each later
	// render, and turn.js's once.
	if got, want := e.r.metrics.kept.Get()-kept, uint64(3*(renders-1)+1); got != want {
		t.Errorf("prism_render_revalidated_total{result=kept} rose by %d, want %d", got, want)
	}

	deploy(site)
	html := string(mustRender(t, e, page).HTML)
	for _, want := range []string{"js=v2 css=20px", "mod=v2", "nostore=v2", "big=v2", "turn=v2", "data=v2"} {
		if !strings.Contains(html, want) {
			t.Fatalf("after the deploy: no %q in %s", want, html)
		}
	}
	for _, file := range []string{"app.js", "app.css", "mod.js"} {
		hits := deployHits(site + file)
		if last := hits[len(hits)-1]; !last.conditional || last.status != http.StatusOK {
			t.Errorf("%s after the deploy: %+v, want a conditional request answered 200", file, last)
		}
	}
	if got := e.r.metrics.changed.Get() - changed; got != 4 { // app.js, app.css, mod.js, turn.js
		t.Errorf("prism_render_revalidated_total{result=changed} rose by %d, want 4", got)
	}
}

// With Options.NoBrowserCache every render fetches every response whole.
func TestNoBrowserCache(t *testing.T) {
	e := getEnv(t)
	r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Timeout: 3 * time.Second,
		NoBrowserCache: true, UserDataDir: t.TempDir(), Origin: e.r.opts.Origin})
	site := deploySite()
	for range 2 {
		res, err := r.Render(ctx, Request{URL: "https://" + pubHost + site + "page"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(res.HTML), "js=v1 css=10px") {
			t.Fatalf("render: %s", res.HTML)
		}
	}
	wantWhole(t, site, 2, "app.js", "app.css", "mod.js", "turn.js")
	if err := stop(); err != nil {
		t.Error(err)
	}
}

// wantWhole checks that each of site's files was fetched whole, with no
// validator, once in each of renders renders.
func wantWhole(t *testing.T, site string, renders int, files ...string) {
	t.Helper()
	for _, file := range files {
		hits := deployHits(site + file)
		if len(hits) != renders {
			t.Errorf("%s: %d requests in %d renders, want one a render", file, len(hits), renders)
		}
		for _, h := range hits {
			if h.conditional || h.status != http.StatusOK {
				t.Errorf("%s: request %+v, want each unconditional", file, h)
			}
		}
	}
}

// Command jsorigin is the benchmarks' origin: a JavaScript page whose
// content is written by script, at every path under /p/ (so every URL is a
// distinct cache key), plus what the page fetches. -page picks the page:
//
//   - flag (default): about 50 KB; after a fetch of /api/items its script
//     writes 200 list items, then `<div id="bench-complete" data-items="200">`.
//     The page declares window.prerenderReady = false and sets it to true
//     once the content is in the DOM.
//   - spa: about 50 KB, an app shell that fetches /api/articles and builds 76
//     articles, then writes `<div id="bench-complete" data-items="76">` last.
//     It never mentions window.prerenderReady: only the DOM says it is done.
//   - docsify: a real docsify 4 site (vendored in docsify/, MIT) in history
//     mode: every path serves the same index.html, docsify then fetches the
//     path's markdown (/p/x -> /p/x.md, /p/x/ -> /p/x/README.md; every .md
//     path serves the same few-KB document) and renders it. The document ends
//     with `<div id="bench-done">`, so that element exists only once docsify
//     rendered it. No request leaves the origin (no CDN, fonts or plugins).
//
// The raw pages hold none of the markers.
package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prismproxy/prism/bench/internal/serve"
)

// Items is how many list items the flag page's script writes; a complete
// render carries data-items equal to it.
const Items = 200

// Articles is how many articles the spa page's script builds.
const Articles = 76

//go:embed docsify/docsify.min.js
var docsifyJS []byte

//go:embed docsify/pure.css
var docsifyCSS []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	page := flag.String("page", "flag", "page to serve: flag (sets window.prerenderReady), spa (no flag; marker in the DOM) or docsify")
	flag.Parse()
	if err := run(*addr, *page); err != nil {
		fmt.Fprintln(os.Stderr, "jsorigin:", err)
		os.Exit(1)
	}
}

// started is the Last-Modified of the cacheable files.
var started = time.Now()

// static returns a handler writing body with the content type ct. A
// cacheable body is served as a static host (nginx, Caddy, a CDN) serves a
// versioned bundle: fresh for an hour, with an ETag and a Last-Modified,
// and 304 to a request that names them.
func static(ct string, body []byte, cacheable bool) http.HandlerFunc {
	n := strconv.Itoa(len(body))
	sum := sha256.Sum256(body)
	etag := fmt.Sprintf(`"%x"`, sum[:8])
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ct)
		if cacheable {
			w.Header().Set("Cache-Control", "public, max-age=3600")
			w.Header().Set("ETag", etag)
			http.ServeContent(w, r, "", started, bytes.NewReader(body))
			return
		}
		w.Header().Set("Content-Length", n)
		w.Write(body)
	}
}

func run(addr, which string) error {
	mux := http.NewServeMux()
	var page []byte
	switch which {
	case "flag":
		page = []byte(buildPage())
		mux.HandleFunc("GET /api/items", static("application/json", []byte(buildAPI()), false))
		mux.HandleFunc("GET /", static("text/html; charset=utf-8", page, false))
	case "spa":
		page = []byte(buildSPA())
		mux.HandleFunc("GET /api/articles", static("application/json", []byte(buildArticles()), false))
		mux.HandleFunc("GET /", static("text/html; charset=utf-8", page, false))
	case "docsify":
		page = []byte(buildDocsifyIndex())
		md := []byte(buildMarkdown())
		mux.HandleFunc("GET /docsify/docsify.min.js", static("application/javascript", docsifyJS, true))
		mux.HandleFunc("GET /docsify/pure.css", static("text/css; charset=utf-8", docsifyCSS, true))
		html := static("text/html; charset=utf-8", page, false)
		doc := static("text/markdown; charset=utf-8", md, false)
		mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, ".md") {
				doc(w, r)
				return
			}
			html(w, r)
		})
	default:
		return fmt.Errorf("-page %q: want flag, spa or docsify", which)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The bench scripts read the chosen address from the first line.
	fmt.Printf("listening http://%s page=%s page_bytes=%d\n", ln.Addr(), which, len(page))
	return serve.Until(ln, mux)
}

// words gives the page text that compresses roughly like prose.
var words = strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod
tempor incididunt ut labore et dolore magna aliqua widget gadget gizmo shipping returns warranty
stainless aluminium ergonomic portable wireless battery charger compact durable premium classic`)

func text(seed, n int) string {
	var b strings.Builder
	x := uint32(seed*2654435761 + 1)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteString(words[x%uint32(len(words))])
		b.WriteByte(' ')
	}
	return b.String()
}

// buildPage returns the ~50 KB HTML page: static markup plus an inline
// script that fetches /api/items and renders the list.
func buildPage() string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bench catalogue</title>
<script>window.prerenderReady = false;</script>
<style>body{font-family:sans-serif}li{margin:2px}</style>
</head><body><header><h1>Catalogue</h1><nav><a href="/">Home</a> <a href="/p/about">About</a></nav></header>
<main><div id="app">Loading…</div>
`)
	for i := range 12 {
		fmt.Fprintf(&b, "<section class=\"static\"><h2>Section %d</h2><p>%s</p></section>\n", i, text(i, 1800))
	}
	b.WriteString(`</main>
<script>
(async function () {
  const res = await fetch('/api/items');
  const items = await res.json();
  const app = document.getElementById('app');
  const ul = document.createElement('ul');
  for (const it of items) {
    const li = document.createElement('li');
    li.innerHTML = '<a href="/p/' + it.id + '">' + it.name + '</a> <span>' + it.blurb + '</span>';
    ul.appendChild(li);
  }
  app.textContent = '';
  app.appendChild(ul);
  const done = document.createElement('div');
  done.id = 'bench-complete';
  done.setAttribute('data-items', String(ul.children.length));
  app.appendChild(done);
  window.prerenderReady = true;
})();
</script>
`)
	return endPage(&b, 99)
}

// endPage pads b with a comment of prose (seeded by seed) so that the page
// is about 50 KB, like a real app shell, closes it and returns it.
func endPage(b *strings.Builder, seed int) string {
	if pad := 50*1024 - b.Len() - len("</body></html>\n") - 9; pad > 0 {
		b.WriteString("<!-- ")
		b.WriteString(text(seed, pad))
		b.WriteString(" -->\n")
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

func buildAPI() string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range Items {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"item-%d","name":"Item %d","blurb":%q}`, i, i, text(1000+i, 60))
	}
	b.WriteByte(']')
	return b.String()
}

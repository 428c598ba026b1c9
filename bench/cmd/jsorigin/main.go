// Command jsorigin is the benchmarks' origin: a JavaScript page of about
// 50 KB whose content is written by script after a fetch, at every path
// under /p/ (so every URL is a distinct cache key), plus its JSON API.
//
// A complete render holds `<div id="bench-complete" data-items="200">`; the
// raw page holds only "Loading". The page declares window.prerenderReady =
// false and sets it to true once the content is in the DOM.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prismproxy/prism/bench/internal/serve"
)

// Items is how many list items the script writes; a complete render
// carries data-items equal to it.
const Items = 200

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "jsorigin:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	page := []byte(buildPage())
	api := []byte(buildAPI())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/items", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(api)))
		w.Write(api)
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		w.Write(page)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The bench scripts read the chosen address from the first line.
	fmt.Printf("listening http://%s page_bytes=%d\n", ln.Addr(), len(page))
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
	// Pad with a comment so the page is about 50 KB like a real app shell.
	if pad := 50*1024 - b.Len() - len("</body></html>\n") - 9; pad > 0 {
		b.WriteString("<!-- ")
		b.WriteString(text(99, pad))
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

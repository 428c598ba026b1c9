package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Origin is the test site PRISM fronts. It counts requests per path.
type Origin struct {
	*httptest.Server
	// Mux serves the pages; tests may add their own.
	Mux     *http.ServeMux
	mu      sync.Mutex
	hits    map[string]int
	renders map[string]int // requests that carried X-Prism-Render
}

// Hits returns how many requests path received.
func (o *Origin) Hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// pageJS is a page whose content only exists once JavaScript ran.
const pageJS = `<!DOCTYPE html>
<html><head><title>%[1]s</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><div id="app">Loading</div>
<script>
document.getElementById('app').innerHTML =
  '<h1>Rendered by JS: %[1]s</h1><p id="vw">width=' + window.innerWidth + '</p>';
</script></body></html>`

// newOrigin starts the test origin; it is closed when the test ends.
func newOrigin(t *testing.T) *Origin {
	o := &Origin{hits: map[string]int{}, renders: map[string]int{}}
	mux := http.NewServeMux()
	o.Mux = mux
	html := func(w http.ResponseWriter, status int, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		html(w, http.StatusOK, fmt.Sprintf(pageJS, r.URL.Path))
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		html(w, http.StatusOK, `<!DOCTYPE html><html><head><title>ready</title>
<script>window.prerenderReady = false;</script></head>
<body><div id="app">waiting</div><script>
setTimeout(function () {
  document.getElementById('app').innerHTML = '<p>late content arrived</p>';
  window.prerenderReady = true;
}, 1500);
</script></body></html>`)
	})
	mux.HandleFunc("/meta404", func(w http.ResponseWriter, r *http.Request) {
		html(w, http.StatusOK, `<!DOCTYPE html><html><head><title>gone</title></head><body>
<div id="app"></div><script>
var m = document.createElement('meta'); m.name = 'prerender-status-code'; m.content = '404';
document.head.appendChild(m);
document.getElementById('app').textContent = 'product not found';
</script></body></html>`)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		html(w, http.StatusNotFound, fmt.Sprintf(pageJS, "missing page"))
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new-home", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/scripts", func(w http.ResponseWriter, r *http.Request) {
		html(w, http.StatusOK, `<!DOCTYPE html><html><head><title>scripts</title>
<script type="application/ld+json">{"@context":"https://schema.org","@type":"Product","name":"Widget"}</script>
<script src="/static/app.js"></script>
</head><body><div id="app"></div>
<script>document.getElementById('app').textContent = 'scripted body';</script>
</body></html>`)
	})
	mux.HandleFunc("/static/app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/javascript")
		fmt.Fprint(w, "window.appLoaded = true;")
	})
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits[r.URL.Path]++
		if r.Header.Get("X-Prism-Render") != "" {
			o.renders[r.URL.Path]++
		}
		o.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

// contains fails the test unless body holds every want.
func contains(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s: body lacks %q:\n%.1500s", what, w, body)
		}
	}
}

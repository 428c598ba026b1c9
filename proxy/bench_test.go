package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// discardWriter is a minimal ResponseWriter so benchmarks measure the
// handler, not a recorder's buffering.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) reset() {
	for k := range d.h {
		delete(d.h, k)
	}
}

// benchProxy builds a Proxy in front of a tiny origin, with a real store.
func benchProxy(b *testing.B) (*Proxy, *fill.Pipeline, *url.URL) {
	b.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><body>hello from the origin</body></html>")
	}))
	b.Cleanup(origin.Close)
	ou, _ := url.Parse(origin.URL)
	sites, err := site.New(site.Options{Hosts: []site.Host{{ID: 1, Name: "example.com", Origin: ou,
		Dimensions: []site.Dimension{{ID: 1, Name: "desktop", MatchUA: []string{"@crawlers"}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := cachestore.New(cachestore.Options{Dir: b.TempDir(), Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	page := "<!DOCTYPE html><html><body>" + strings.Repeat("<p>rendered content</p>", 500) + "</body></html>"
	fp, err := fill.New(fill.Options{Sites: sites, Store: store, Logger: logger,
		Render: func(context.Context, prerender.Request) (*prerender.Result, error) {
			return &prerender.Result{Status: 200, HTML: []byte(page)}, nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{Sites: sites, Store: store, Fill: fp, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	return p, fp, ou
}

func BenchmarkHitMemory(b *testing.B) {
	p, fp, _ := benchProxy(b)
	if _, err := fp.Refresh(context.Background(), cachestore.Key{HostID: 1, DimensionID: 1, URL: "/page"}, prerender.Online); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, accept string }{{"gzip", "gzip, deflate, br"}, {"identity", ""}} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/page", nil)
			r.Header.Set("User-Agent", uaGooglebot)
			if bc.accept != "" {
				r.Header.Set("Accept-Encoding", bc.accept)
			}
			w := &discardWriter{h: make(http.Header)}
			p.ServeHTTP(w, r)
			if w.h.Get("X-Prism-Cache") != "HIT" {
				b.Fatalf("not a hit: %v", w.h)
			}
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				p.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkPassThrough and BenchmarkBareReverseProxy send a person's request
// to the same origin, through PRISM and through a plain ReverseProxy with the
// same transport: the difference is PRISM's routing and detection.
func BenchmarkPassThrough(b *testing.B) {
	p, _, _ := benchProxy(b)
	benchPass(b, p)
}

func BenchmarkBareReverseProxy(b *testing.B) {
	_, _, ou := benchProxy(b)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(ou)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: site.NewOriginTransport(30 * time.Second),
	}
	benchPass(b, rp)
}

func benchPass(b *testing.B, h http.Handler) {
	r := httptest.NewRequest("GET", "/page?x=1", nil)
	r.Header.Set("User-Agent", uaPerson)
	r.Header.Set("Accept", "text/html")
	w := &discardWriter{h: make(http.Header)}
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
}

package proxy

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prismproxy/prism/cachestore"
)

func gzipBytes(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestIdentityHits(t *testing.T) {
	page := "<!DOCTYPE html><html><body>" + strings.Repeat("<p>identity</p>", 200) + "</body></html>"
	tests := []struct {
		name      string
		budget    int64
		wantCache bool
	}{
		{"cached", 1 << 20, true},
		{"too large for the budget: streamed", 1 << 10, false},
		{"cache off", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *testOptions) { o.IdentityCacheBytes = tt.budget })
			h.render.set(htmlResult(200, page))
			for i, want := range []string{"MISS", "HIT", "HIT"} {
				w := h.do("GET", "/id", uaGooglebot)
				if got := w.Header().Get("X-Prism-Cache"); got != want {
					t.Fatalf("request %d: X-Prism-Cache %q, want %q", i, got, want)
				}
				if w.Header().Get("Content-Encoding") != "" {
					t.Fatalf("request %d: Content-Encoding %q for a client without gzip", i, w.Header().Get("Content-Encoding"))
				}
				if got := w.Body.String(); !strings.Contains(got, "<p>identity</p><p>identity</p>") || w.Header().Get("Content-Length") != strconv.Itoa(len(got)) {
					t.Fatalf("request %d: body of %d bytes, Content-Length %s", i, len(got), w.Header().Get("Content-Length"))
				}
			}
			h.p.ident.mu.Lock()
			n := len(h.p.ident.items)
			h.p.ident.mu.Unlock()
			if got := n > 0; got != tt.wantCache {
				t.Fatalf("identity cache holds %d items, want cached=%v", n, tt.wantCache)
			}
		})
	}
}

func TestIdentityCacheEvicts(t *testing.T) {
	c := newIdentityCache(10_000)
	entries := make([]*cachestore.Entry, 10)
	for i := range entries {
		entries[i] = &cachestore.Entry{Body: make([]byte, 100)}
		c.add(entries[i], make([]byte, 1000))
	}
	if c.size > c.max {
		t.Fatalf("size %d over budget %d", c.size, c.max)
	}
	if _, ok := c.get(entries[0]); ok {
		t.Fatal("oldest entry still cached")
	}
	if _, ok := c.get(entries[9]); !ok {
		t.Fatal("newest entry evicted")
	}
	if len(c.items) != c.ll.Len() {
		t.Fatalf("map holds %d, list %d", len(c.items), c.ll.Len())
	}
}

func TestIdentityBodyRejectsBadGzip(t *testing.T) {
	h := newHarness(t)
	good := gzipBytes(t, "hello world")
	truncated := append([]byte(nil), good[:len(good)-6]...)
	truncated = append(truncated, good[len(good)-4:]...) // trailer kept, data cut
	lying := append([]byte(nil), good...)
	lying[len(lying)-4]++ // trailer claims one byte more
	tests := []struct {
		name    string
		body    []byte
		wantErr bool
	}{
		{"good", good, false},
		{"not gzip", []byte("plain text, not gzip at all"), true},
		{"truncated", truncated, true},
		{"size mismatch", lying, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := h.p.identityBody(&cachestore.Entry{Body: tt.body})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && string(b) != "hello world" {
				t.Fatalf("body %q", b)
			}
		})
	}
}

func TestCorruptEntryFallsBackToOrigin(t *testing.T) {
	h := newHarness(t)
	k := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/broken"}
	// A damaged deflate stream whose trailer still claims a small size: the
	// checksum catches it before anything is written.
	body := gzipBytes(t, strings.Repeat("some page text ", 40))
	body[len(body)/2] ^= 0xff
	if err := h.store.Put(&cachestore.Entry{Key: k, Status: 200, Header: http.Header{"Content-Type": {"text/html"}},
		Body: body}); err != nil {
		t.Fatal(err)
	}
	w := h.do("GET", "/broken", uaGooglebot)
	if got := w.Header().Get("X-Prism-Cache"); got != "BYPASS" {
		t.Fatalf("X-Prism-Cache %q, want BYPASS", got)
	}
	if !strings.Contains(w.Body.String(), "origin page GET /broken") {
		t.Fatalf("body %q, want the origin's page", w.Body.String())
	}
}

package adminapi

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeRequests sends arbitrary bodies to every POST endpoint: the
// server must never panic and never answer 5xx (Refresh succeeds here).
func FuzzDecodeRequests(f *testing.F) {
	seeds := []string{
		`{"url":"/a"}`, `{"url":"https://example.com/a?b=1"}`, `{"url":"/../x"}`, `{"url":"/%2e%2e/x"}`,
		`{"pattern":"/products/*"}`, `{"pattern":"https://example.com/**"}`, `{"pattern":"/{a"}`,
		`{"url":"/a","dimension":"mobile"}`, `{"url":"/a","dimension":2}`, `{"url":"/a","dimension":1e99}`,
		`{"sitemap_url":"https://example.com/s.xml"}`, `{"sitemap_url":"http://127.0.0.1/"}`,
		``, `null`, `[]`, `{"url":null}`, `{"url":"\u0000"}`, `{} {}`, `{"url":"/a"`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	e := newEnv(f)
	paths := []string{"/purge/url", "/purge/pattern", "/render", "/warmup", "/purge/all", "/warmup/cancel"}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		path := paths[int(which)%len(paths)]
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q = %d %s", path, body, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("POST %s %q: Content-Type %q", path, body, rec.Header().Get("Content-Type"))
		}
		if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"error"`) {
			t.Fatalf("POST %s %q = %d without an error body: %s", path, body, rec.Code, rec.Body)
		}
	})
}

// FuzzSitemap feeds arbitrary documents, plain and gzipped, to the sitemap
// reader and parser: no panic, limits respected.
func FuzzSitemap(f *testing.F) {
	for _, s := range [][]byte{
		urlset("https://example.com/a", "https://example.com/b"),
		sitemapindex("https://example.com/s.xml"),
		[]byte(`<urlset><url><loc><![CDATA[x]]></loc></url></urlset>`),
		[]byte(`<?xml version="1.0" encoding="ISO-8859-1"?><urlset/>`),
		[]byte("\x1f\x8b\x08\x00"),
		gz(urlset("https://example.com/z")),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, in := range [][]byte{doc, gzBytes(doc)} {
			r, err := sitemapReader(bytes.NewReader(in), 1<<16)
			if err != nil {
				continue
			}
			kind, locs, _, err := parseSitemap(r, 10)
			if err != nil {
				continue
			}
			if kind != urlSet && kind != sitemapIndex {
				t.Fatalf("kind %v without error", kind)
			}
			if len(locs) > 10 {
				t.Fatalf("%d locs, limit 10", len(locs))
			}
		}
	})
}

func gzBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

var _ http.Handler = (*Server)(nil)

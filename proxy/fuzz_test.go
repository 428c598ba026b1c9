package proxy

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzServeHTTP feeds hostile request targets and headers to the bot path:
// nothing may panic, and the proxy itself never answers with a 5xx while
// the renderer and the origin are healthy.
func FuzzServeHTTP(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "/a%00", "/q?utm_source=1&a=%zz", "/x.js", "/é?ü=1"} {
		f.Add(s, "gzip;q=0.5, *;q=0", `"abc", W/"def"`, "Googlebot")
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, target, accept, inm, ua string) {
		for _, v := range []string{accept, inm, ua} {
			if !validHeaderValue(v) {
				return // the server rejects such requests before any handler
			}
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.URL = u
		r.RequestURI = target
		r.Header.Set("User-Agent", ua)
		r.Header.Set("Accept-Encoding", accept)
		r.Header.Set("If-None-Match", inm)
		w := httptest.NewRecorder()
		h.p.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%q: status %d: %q", target, w.Code, w.Body)
		}
	})
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

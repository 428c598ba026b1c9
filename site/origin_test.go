package site

import (
	"net/url"
	"testing"
)

func TestOriginURL(t *testing.T) {
	for _, tc := range []struct{ origin, public, want string }{
		{"http://127.0.0.1:3000", "https://example.com/a/b?x=1#frag", "http://127.0.0.1:3000/a/b?x=1"},
		{"http://127.0.0.1:3000/", "https://example.com/", "http://127.0.0.1:3000/"},
		{"https://backend:8443/shop/", "https://example.com/a?b=2", "https://backend:8443/shop/a?b=2"},
		{"https://backend:8443/shop", "https://example.com/../../etc/passwd", "https://backend:8443/shop/etc/passwd"},
		{"http://o", "https://example.com/%2e%2e/x", "http://o/%2e%2e/x"},
	} {
		o, _ := url.Parse(tc.origin)
		u, _ := url.Parse(tc.public)
		if got := OriginURL(o, u).String(); got != tc.want {
			t.Errorf("OriginURL(%s, %s) = %s, want %s", tc.origin, tc.public, got, tc.want)
		}
	}
}

package site

import (
	"net/url"
	"testing"
	"time"
)

func TestOriginHeaderTimeout(t *testing.T) {
	for _, tc := range []struct{ write, want time.Duration }{
		{0, 30 * time.Second},
		{-time.Second, 30 * time.Second},
		{time.Minute, 30 * time.Second},
		{2 * time.Minute, 30 * time.Second},
		{40 * time.Second, 20 * time.Second},
		{time.Second, 500 * time.Millisecond},
	} {
		if got := OriginHeaderTimeout(tc.write); got != tc.want {
			t.Errorf("OriginHeaderTimeout(%s) = %s, want %s", tc.write, got, tc.want)
		}
	}
}

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

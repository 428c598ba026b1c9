package cachestore

import (
	"strings"
	"testing"
)

// TestPatternPrefix: every URL a pattern selects starts with its Prefix,
// so an index read from the prefix on misses none.
func TestPatternPrefix(t *testing.T) {
	urls := []string{"/", "/a", "/a?x=1", "/ab", "/a/b", "/a/b/c.html", "/a/b?q=*", "/blog/2026/x", "/blog", "/c07/item-1",
		"/c07/item-1?page=2", "/x{y}", "/x*y", "/[a]", "/é/ü", "/a\\b"}
	for _, tc := range []struct{ glob, prefix string }{
		{"/a", "/a"}, {"/a*", "/a"}, {"/a/**", "/a/"}, {"/c07/*", "/c07/"}, {"**", ""}, {"*.html", ""},
		{"/blog/{2025,2026}/*", "/blog/"}, {"/a/?", "/a/"}, {"/[ab]", "/"}, {"/x\\*y", "/x"}, {"/é/*", "/é/"},
		{"/a?x=*", "/a"},
	} {
		p, err := NewPattern(0, tc.glob)
		if err != nil {
			t.Fatalf("NewPattern(%q): %v", tc.glob, err)
		}
		if got := p.Prefix(); got != tc.prefix {
			t.Errorf("Prefix(%q) = %q, want %q", tc.glob, got, tc.prefix)
		}
		for _, u := range urls {
			if p.Match(Key{HostID: 1, DimensionID: 1, URL: u}) && !strings.HasPrefix(u, p.Prefix()) {
				t.Errorf("%q matches %q, which does not start with its prefix %q", tc.glob, u, p.Prefix())
			}
		}
	}
}

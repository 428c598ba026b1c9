package site

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"root", "http://x/", "/", false},
		{"empty path", "http://x", "/", false},
		{"empty path with query", "http://x?b=1", "/?b=1", false},
		{"plain", "/a/b", "/a/b", false},
		{"trailing slash kept", "/a/b/", "/a/b/", false},
		{"sorted by key", "/p?b=2&a=1&c=3", "/p?a=1&b=2&c=3", false},
		{"repeated keys sorted by value", "/p?a=2&a=1&a=10", "/p?a=1&a=10&a=2", false},
		{"key without value", "/p?b&a=", "/p?a=&b", false},
		{"key with and without =", "/p?a=&a", "/p?a&a=", false},
		{"empty pairs dropped", "/p?&&a=1&&", "/p?a=1", false},
		{"tracking stripped", "/p?utm_source=x&utm_Medium=y&gclid=1&fbclid=2&msclkid=3&id=7", "/p?id=7", false},
		{"escaped fragment", "/app?_escaped_fragment_=/products/1", "/app#!/products/1", false},
		{"escaped fragment encoded, with a query", "/app?b=2&_escaped_fragment_=%2Fq%3Fx%3D1%20y&a=1", "/app?a=1&b=2#!/q?x=1%20y", false},
		{"escaped fragment empty", "/app?_escaped_fragment_=", "/app", false},
		{"escaped tracking key stripped", "/p?utm%5Fsource=x&id=7", "/p?id=7", false},
		{"only tracking: no ?", "/p?utm_campaign=x", "/p", false},
		{"empty query", "/p?", "/p", false},
		{"fragment dropped", "/p?a=1#top", "/p?a=1", false},
		{"dot segments", "/a/./b/../c", "/a/c", false},
		{"dot at end keeps directory", "/a/b/.", "/a/b/", false},
		{"dotdot at end", "/a/b/..", "/a/", false},
		{"dotdot to root", "/a/..", "/", false},
		{"encoded dots resolved", "/a/%2e/b/%2E%2e/c", "/a/c", false},
		{"repeated slashes", "http://x//a///b//", "/a/b/", false},
		{"escape root", "/../a", "", true},
		{"escape root deeper", "/a/../../b", "", true},
		{"encoded escape root", "/%2e%2e/etc/passwd", "", true},
		{"NUL", "/a%00b", "", true},
		{"unreserved decoded", "/%7Euser/%41bc", "/~user/Abc", false},
		{"hex upper-cased", "/a%2fb/%c3%a9", "/a%2Fb/%C3%A9", false},
		{"encoded slash kept", "/a%2Fb", "/a%2Fb", false},
		{"unicode", "/café/ü?q=ñ", "/caf%C3%A9/%C3%BC?q=%C3%B1", false},
		{"unicode equals escaped", "/caf%C3%A9", "/caf%C3%A9", false},
		{"space", "/a%20b?q=a%20b+c", "/a%20b?q=a%20b+c", false},
		{"sub-delims kept", "/a;b=c,d:e@f!$'()*+", "/a;b=c,d:e@f!$'()*+", false},
		{"query escapes canonical", "/p?q=%2f%41&r=/x?y", "/p?q=%2FA&r=/x?y", false},
		{"query bad escape kept literally", "/p?q=100%&r=%zz", "/p?q=100%25&r=%25zz", false},
		{"query hash escaped", "/p?q=%23", "/p?q=%23", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatalf("parse %q: %v", tt.in, err)
			}
			got, err := tab.Normalize(u)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidURL) {
					t.Fatalf("Normalize(%q) = %q, %v; want ErrInvalidURL", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
			checkIdempotent(t, tab, got)
		})
	}
}

func TestNormalizeOptions(t *testing.T) {
	tab, err := New(Options{StripParams: []string{"session*", "x"}, StaticExtensions: []string{".html"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tab.Normalize(mustURL(t, "/p?sessionid=1&x=2&xx=3&utm_source=4"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/p?utm_source=4&xx=3"; got != want {
		t.Errorf("Normalize = %q, want %q", got, want)
	}
	if !tab.IsStatic("/a.HTML") || tab.IsStatic("/a.css") {
		t.Error("custom static extensions not used")
	}
	if _, err := tab.Normalize(nil); !errors.Is(err, ErrInvalidURL) {
		t.Errorf("Normalize(nil) error = %v", err)
	}
}

func TestNormalizeRawPath(t *testing.T) {
	// A URL built in code, not parsed: RawPath is a hint, Path is the truth.
	tab := testTable(t)
	u := &url.URL{Path: "/a b/ü/%", RawQuery: "z=1&a=2"}
	got, err := tab.Normalize(u)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/a%20b/%C3%BC/%25?a=2&z=1"; got != want {
		t.Errorf("Normalize = %q, want %q", got, want)
	}
}

func TestIsStatic(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		path string
		want bool
	}{
		{"/app.js", true},
		{"/css/site.CSS", true},
		{"/img/a.b.png", true},
		{"/robots.txt", true},
		{"/sitemap.xml", true},
		{"/font.woff2", true},
		{"/", false},
		{"/page", false},
		{"/page.html", false},
		{"/dir.js/page", false},
		{"/.js", true},
		{"/a.verylongextensionname", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := tab.IsStatic(tt.path); got != tt.want {
			t.Errorf("IsStatic(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func checkIdempotent(t *testing.T, tab *Table, normalized string) {
	t.Helper()
	u, err := url.Parse(normalized)
	if err != nil {
		t.Fatalf("normalized %q does not parse: %v", normalized, err)
	}
	again, err := tab.Normalize(u)
	if err != nil {
		t.Fatalf("Normalize(%q) (second pass): %v", normalized, err)
	}
	if again != normalized {
		t.Errorf("not idempotent: %q -> %q", normalized, again)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b/?b=2&a=1", "/a/../b", "/%2e%2e/x", "/a%2Fb?q=%zz", "/café?ü=1#f",
		"//a//b", "/p?utm_source=x&a", "/a%00", "/?&=&", "/a/./b/.", "http://x.test/p?q=1",
	} {
		f.Add(s)
	}
	tab := testTable(f)
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		got, err := tab.Normalize(u)
		if err != nil {
			if !errors.Is(err, ErrInvalidURL) {
				t.Fatalf("Normalize(%q) error %v is not ErrInvalidURL", raw, err)
			}
			return
		}
		if got == "" || got[0] != '/' {
			t.Fatalf("Normalize(%q) = %q: does not start with /", raw, got)
		}
		checkIdempotent(t, tab, got)
		_, _, _ = tab.Resolve(raw, nil)
		checkCanonicalPath(t, u.EscapedPath())
	})
}

// checkCanonicalPath checks Normalize's shortcut: isCanonicalPath(p) only
// when writePath leaves p unchanged.
func checkCanonicalPath(t *testing.T, p string) {
	t.Helper()
	if !isCanonicalPath(p) {
		return
	}
	var b strings.Builder
	if err := writePath(&b, p); err != nil {
		t.Fatalf("isCanonicalPath(%q) = true, but writePath fails: %v", p, err)
	}
	if b.String() != p {
		t.Fatalf("isCanonicalPath(%q) = true, but writePath gives %q", p, b.String())
	}
}

func TestIsCanonicalPath(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want bool
	}{
		{"/", true}, {"/a", true}, {"/a/b", true}, {"/a/b/", true}, {"/p/hit", true},
		{"/a-b_c~d.e/f!$&'()*+,;=:@", true}, {"/.a/..b/a.", true},
		{"", false}, {"a/b", false}, {"//", false}, {"//a", false}, {"/a//b", false}, {"/a//", false},
		{"/.", false}, {"/./a", false}, {"/a/.", false}, {"/..", false}, {"/a/../b", false}, {"/a/..", false},
		{"/%41", false}, {"/a%2Fb", false}, {"/a b", false}, {"/caf\xc3\xa9", false}, {"/a?b", false}, {"/a\x00", false},
	} {
		if got := isCanonicalPath(tt.p); got != tt.want {
			t.Errorf("isCanonicalPath(%q) = %v, want %v", tt.p, got, tt.want)
		}
		checkCanonicalPath(t, tt.p)
	}
}

func BenchmarkNormalize(b *testing.B) {
	tab := testTable(b)
	for _, bc := range []struct{ name, in string }{
		{"canonical", "/products/widget-pro?color=red&size=m"},
		{"canonical-path", "/products/widget-pro"},
		{"messy", "/a/./b/../Products/%7ewidget?utm_source=x&size=m&color=red&gclid=1"},
	} {
		u := mustURL(b, bc.in)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tab.Normalize(u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestEscapesRoot(t *testing.T) {
	for p, want := range map[string]bool{
		"/a/b": false, "/a/../b": false, "/..": true, "/a/../../b": true, "/%2e%2e/x": true,
		"/%252e%252e/x": true, "/a%00b": true, "/a\\b": true, "/%zz": true, "/./a/.": false,
	} {
		if got := EscapesRoot(p); got != want {
			t.Errorf("EscapesRoot(%q) = %v, want %v", p, got, want)
		}
	}
}

package site

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testTable builds two hosts: example.com (desktop bots, mobile bots,
// crawlers) and shop.test.
func testTable(t testing.TB) *Table {
	t.Helper()
	tab, err := New(Options{Hosts: []Host{
		{
			ID: 1, Name: "Example.com", Aliases: []string{"www.example.com"},
			Origin: mustURL(t, "http://127.0.0.1:8080"),
			Dimensions: []Dimension{
				{ID: 1, Name: "mobile", MatchUA: []string{"re:mobile.*googlebot", "iPhone-Bot"}, Mobile: true, Width: 412, Height: 915},
				{ID: 2, Name: "desktop", MatchUA: []string{"Googlebot", "@social"}},
				{ID: 3, Name: "ai", MatchUA: []string{"@ai"}},
				{ID: 4, Name: "other", MatchUA: []string{"@crawlers"}},
			},
		},
		{
			ID: 2, Name: "shop.test", Scheme: "http",
			Origin:     mustURL(t, "https://origin.shop.test"),
			Dimensions: []Dimension{{ID: 7, Name: "all", MatchUA: []string{"@search"}}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestNewValidates(t *testing.T) {
	origin := mustURL(t, "http://o.test")
	dim := []Dimension{{ID: 1, Name: "d", MatchUA: []string{"bot"}}}
	tests := []struct {
		name  string
		opts  Options
		wants []string // substrings of the error; none: no error
	}{
		{"ok", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin, Dimensions: dim}}}, nil},
		{"duplicate host id", Options{Hosts: []Host{
			{ID: 1, Name: "a.test", Origin: origin, Dimensions: dim},
			{ID: 1, Name: "b.test", Origin: origin, Dimensions: dim},
		}}, []string{`hosts[1].id: duplicate id 1 (also hosts[0])`}},
		{"duplicate name across hosts", Options{Hosts: []Host{
			{ID: 1, Name: "a.test", Origin: origin, Dimensions: dim},
			{ID: 2, Name: "b.test", Aliases: []string{"A.TEST."}, Origin: origin, Dimensions: dim},
		}}, []string{`hosts[1].aliases[0]: "A.TEST." is already used by hosts[0].name`}},
		{"no dimensions", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin}}}, []string{`hosts[0].dimensions: at least one dimension is required`}},
		{"duplicate dimension id", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin, Dimensions: []Dimension{
			{ID: 1, Name: "x"}, {ID: 1, Name: "y"},
		}}}}, []string{`hosts[0].dimensions[1].id: duplicate id 1 (also hosts[0].dimensions[0])`}},
		{"missing origin", Options{Hosts: []Host{{ID: 1, Name: "a.test", Dimensions: dim}}}, []string{`hosts[0].origin: must be an absolute http(s) URL`}},
		{"bad origin scheme", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: mustURL(t, "ftp://x"), Dimensions: dim}}}, []string{`hosts[0].origin: "ftp://x" must be an absolute http(s) URL`}},
		{"bad regexp", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin, Dimensions: []Dimension{
			{ID: 3, Name: "d", MatchUA: []string{"re:("}},
		}}}}, []string{`hosts[0].dimensions[0].match_ua[0]: bad regular expression`}},
		{"unknown group", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin, Dimensions: []Dimension{
			{ID: 3, Name: "d", MatchUA: []string{"@robots"}},
		}}}}, []string{`unknown group`}},
		{"empty matcher", Options{Hosts: []Host{{ID: 1, Name: "a.test", Origin: origin, Dimensions: []Dimension{
			{ID: 3, Name: "d", MatchUA: []string{" "}},
		}}}}, []string{`would match every user agent`}},
		{"every problem at once", Options{Hosts: []Host{
			{ID: 1, Name: "a.test", Dimensions: dim},
			{ID: 1, Name: "", Origin: origin},
		}}, []string{"hosts[0].origin: must be an absolute", "hosts[1].id: duplicate id 1", `hosts[1].name: "" must not be empty`, "hosts[1].dimensions: at least one"}},
		{"bad static extension", Options{StaticExtensions: []string{"css"}}, []string{`static_extensions[0]: "css" is not an extension`}},
		{"more problems of the class", Options{
			Hosts: []Host{{ID: -1, Name: "a.test:99999", Aliases: []string{"a.test", "http://b.test"}, Scheme: "ftp",
				Origin: mustURL(t, "http://user@o.test/app"), RecacheInterval: time.Second,
				Dimensions: []Dimension{
					{ID: 2, Name: "D", Width: 50, RenderUA: "x\ny"},
					{ID: 3, Name: "d", Height: 20000, MatchUA: []string{"@robots"}},
				}}},
			StripParams:      []string{"*"},
			StaticExtensions: []string{".a/b"},
		}, []string{
			"hosts[0].id: must be a positive integer, got -1",
			`hosts[0].name: "a.test:99999" has an invalid port`,
			`hosts[0].aliases[1]: "http://b.test" must be a host name, without a scheme`,
			`hosts[0].origin: "http://user@o.test/app" must not hold user information`,
			`hosts[0].scheme: must be "http" or "https", got "ftp"`,
			"hosts[0].recache_interval: must be 0 (use recache.interval) or at least 1m, got 1s",
			"hosts[0].dimensions[0].width: must be between 100 and 10000, got 50",
			"hosts[0].dimensions[0].render_ua: must not contain control characters",
			`hosts[0].dimensions[1].name: duplicate name "d" (also hosts[0].dimensions[0])`,
			"hosts[0].dimensions[1].height: must be between 100 and 10000, got 20000",
			"hosts[0].dimensions[1].match_ua[0]:",
			"strip_params[0]: must not be empty",
			`static_extensions[0]: ".a/b" is not an extension`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New: no error, want %q", tt.wants)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewCopiesHosts(t *testing.T) {
	hosts := []Host{{ID: 1, Name: "a.test", Origin: mustURL(t, "http://o.test"),
		Dimensions: []Dimension{{ID: 1, Name: "d", MatchUA: []string{"bot"}}}}}
	tab, err := New(Options{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	hosts[0].Name = "changed.test"
	hosts[0].Origin.Host = "changed"
	hosts[0].Dimensions[0].MatchUA[0] = "changed"
	h, ok := tab.Match("a.test")
	if !ok {
		t.Fatal("a.test not matched after the caller changed its options")
	}
	if h.Origin.Host != "o.test" || h.Dimensions[0].MatchUA[0] != "bot" {
		t.Errorf("table shares memory with options: origin %q, match %q", h.Origin.Host, h.Dimensions[0].MatchUA[0])
	}
}

func TestMatch(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		hostport string
		wantID   int // 0: no match
	}{
		{"example.com", 1},
		{"EXAMPLE.COM", 1},
		{"example.com:4000", 1},
		{"example.com.", 1},
		{"example.com.:443", 1},
		{"www.example.com", 1},
		{"Www.Example.Com:80", 1},
		{"shop.test", 2},
		{"other.test", 0},
		{"", 0},
		{":80", 0},
		{"example.com:", 1},
		{"sub.example.com", 0},
		{"example.com..", 0},
		{"[::1]:80", 0},
		{strings.Repeat("a", 1000), 0},
	}
	for _, tt := range tests {
		t.Run(tt.hostport, func(t *testing.T) {
			h, ok := tab.Match(tt.hostport)
			switch {
			case tt.wantID == 0 && ok:
				t.Errorf("Match(%q) = host %d, want none", tt.hostport, h.ID)
			case tt.wantID != 0 && (!ok || h.ID != tt.wantID):
				t.Errorf("Match(%q) = %v, %v; want host %d", tt.hostport, h, ok, tt.wantID)
			}
		})
	}
	if o, ok := tab.Origin("www.example.com:4000"); !ok || o.String() != "http://127.0.0.1:8080" {
		t.Errorf("Origin = %v, %v", o, ok)
	}
	if _, ok := tab.Origin("nope.test"); ok {
		t.Error("Origin(nope.test) found")
	}
}

func TestLookups(t *testing.T) {
	tab := testTable(t)
	if got := len(tab.Hosts()); got != 2 {
		t.Fatalf("Hosts: %d, want 2", got)
	}
	h, ok := tab.ByID(2)
	if !ok || h.Name != "shop.test" {
		t.Fatalf("ByID(2) = %v, %v", h, ok)
	}
	if _, ok := tab.ByID(3); ok {
		t.Error("ByID(3) found")
	}
	if d, ok := h.Dimension(7); !ok || d.Name != "all" {
		t.Errorf("Dimension(7) = %v, %v", d, ok)
	}
	if _, ok := h.Dimension(1); ok {
		t.Error("Dimension(1) found on host 2")
	}
	h1, _ := tab.ByID(1)
	if d, ok := h1.DimensionByName("Desktop"); !ok || d.ID != 2 {
		t.Errorf("DimensionByName(Desktop) = %v, %v", d, ok)
	}
	if got, want := h1.PublicURL("/a?b=1"), "https://Example.com/a?b=1"; got != want {
		t.Errorf("PublicURL = %q, want %q", got, want)
	}
	if got, want := h.PublicURL("/"), "http://shop.test/"; got != want {
		t.Errorf("PublicURL = %q, want %q", got, want)
	}
}

func TestResolve(t *testing.T) {
	tab := testTable(t)
	h1, _ := tab.ByID(1)
	h2, _ := tab.ByID(2)
	tests := []struct {
		name    string
		raw     string
		h       *Host
		wantID  int
		wantURL string
		wantErr error
	}{
		{"path", "/products/widget?b=2&a=1&utm_source=x", h1, 1, "/products/widget?a=1&b=2", nil},
		{"full URL on host", "https://example.com/p?x=1#frag", h1, 1, "/p?x=1", nil},
		{"full URL on alias with port", "http://WWW.example.com:4000/p", h1, 1, "/p", nil},
		{"full URL any host", "https://shop.test/cart", nil, 2, "/cart", nil},
		{"other host", "https://shop.test/cart", h1, 0, "", ErrUnknownHost},
		{"unknown host", "https://evil.test/", nil, 0, "", ErrUnknownHost},
		{"path without host, several configured", "/a", nil, 0, "", ErrUnknownHost},
		{"traversal", "/../etc/passwd", h1, 0, "", ErrInvalidURL},
		{"encoded traversal", "/a/%2e%2e/%2E%2E/etc", h2, 0, "", ErrInvalidURL},
		{"relative", "page", h1, 0, "", ErrInvalidURL},
		{"empty", "  ", h1, 0, "", ErrInvalidURL},
		{"bad escape", "/a%zz", h1, 0, "", ErrInvalidURL},
		{"ftp", "ftp://example.com/a", nil, 0, "", ErrInvalidURL},
		{"user info", "https://u:p@example.com/a", nil, 0, "", ErrInvalidURL},
		{"scheme-less host", "//example.com/x", nil, 0, "", ErrInvalidURL},
		{"NUL", "/a%00b", h1, 0, "", ErrInvalidURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, got, err := tab.Resolve(tt.raw, tt.h)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve(%q) error = %v, want %v", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.raw, err)
			}
			if h.ID != tt.wantID || got != tt.wantURL {
				t.Errorf("Resolve(%q) = host %d %q, want host %d %q", tt.raw, h.ID, got, tt.wantID, tt.wantURL)
			}
		})
	}

	single, err := New(Options{Hosts: []Host{{ID: 5, Name: "one.test", Origin: mustURL(t, "http://o"),
		Dimensions: []Dimension{{ID: 1, Name: "d"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if h, got, err := single.Resolve("/x", nil); err != nil || h.ID != 5 || got != "/x" {
		t.Errorf("single-host Resolve = %v %q %v", h, got, err)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute: "1m", 2 * time.Hour: "2h", 90 * time.Second: "1m30s", 10 * time.Minute: "10m", 30 * time.Second: "30s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

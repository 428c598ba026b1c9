package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestServiceSection(t *testing.T) {
	// Off by default, loopback allowed by default.
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Service.Enabled() {
		t.Fatal("service enabled without an address")
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if got := c.Service.AllowPrefixes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("default allow_from %v, want %v", got, want)
	}

	c, err = Parse([]byte(`
[service]
address = "127.0.0.1:4002"
tokens = ["t1", "t2"]
allow_from = ["10.0.0.0/8", "192.168.1.7"]
default_dimension = "desktop"
` + minimal))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid [service]: %v", err)
	}
	if got := c.Service.AllowPrefixes(); len(got) != 2 || got[1] != netip.MustParsePrefix("192.168.1.7/32") {
		t.Fatalf("allow_from %v", got)
	}
	// An explicitly empty list allows nobody.
	c, _ = Parse([]byte("[service]\naddress = \"127.0.0.1:4002\"\nallow_from = []\n" + minimal))
	if got := c.Service.AllowPrefixes(); len(got) != 0 {
		t.Fatalf("allow_from = [] gave %v, want none", got)
	}
}

func TestServiceValidation(t *testing.T) {
	doc := `
[service]
address = "0.0.0.0:4002"
tokens = []
allow_from = ["10.0.0.0/33", "nope"]
default_dimension = "tablet"
` + minimal
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ps := problems(c.Validate())
	got := map[string]*Problem{}
	for _, p := range ps {
		got[p.Key] = p
	}
	for key, line := range map[string]int{
		"service.address":           3,
		"service.allow_from[0]":     5,
		"service.allow_from[1]":     5,
		"service.default_dimension": 6,
	} {
		p, ok := got[key]
		if !ok {
			t.Errorf("no problem for %s in %v", key, ps)
			continue
		}
		if p.Line != line {
			t.Errorf("%s: line %d, want %d (%v)", key, p.Line, line, p)
		}
	}
	if p := got["service.default_dimension"]; p != nil && !strings.Contains(p.Msg, "example.com") {
		t.Errorf("default_dimension problem does not name the host: %v", p)
	}

	for _, bad := range []string{`""`, `"a b"`, `"a,b"`, "\"a\\u0001\""} {
		c, err := Parse([]byte("[service]\naddress = \"127.0.0.1:4002\"\ntokens = [" + bad + "]\n" + minimal))
		if err != nil {
			t.Fatalf("%s: %v", bad, err)
		}
		ps := problems(c.Validate())
		if len(ps) != 1 || ps[0].Key != "service.tokens[0]" || ps[0].Line != 3 {
			t.Errorf("token %s: problems %v, want one for service.tokens[0] at line 3", bad, ps)
		}
	}
	// An unknown key names itself and its line.
	_, err = Parse([]byte("[service]\naddress = \"127.0.0.1:4002\"\ntoken = \"x\"\n" + minimal))
	if err == nil || !strings.Contains(err.Error(), "service.token") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestServiceTokensFromEnv(t *testing.T) {
	p := writeFile(t, "[service]\naddress = \"0.0.0.0:4002\"\n"+minimal)
	if _, err := LoadWith(p, env(nil)); err == nil {
		t.Fatal("public service address without tokens accepted")
	}
	c, err := LoadWith(p, env(map[string]string{EnvServiceTokens: " a1, b2 ,"}))
	if err != nil {
		t.Fatalf("tokens from %s: %v", EnvServiceTokens, err)
	}
	if !reflect.DeepEqual(c.Service.Tokens, []string{"a1", "b2"}) {
		t.Fatalf("tokens %q", c.Service.Tokens)
	}
	// Set but empty: the file's tokens stay.
	p = writeFile(t, "[service]\naddress = \"127.0.0.1:4002\"\ntokens = [\"f\"]\n"+minimal)
	c, err = LoadWith(p, env(map[string]string{EnvServiceTokens: " , "}))
	if err != nil || !reflect.DeepEqual(c.Service.Tokens, []string{"f"}) {
		t.Fatalf("empty env: %v %q", err, c.Service.Tokens)
	}
}

// TestMappedPrefixes: an IPv4-mapped prefix in allow_from or
// trusted_proxies names the IPv4 addresses it maps (peers are compared
// unmapped), and one shorter than /96 is refused.
func TestMappedPrefixes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:192.168.1.7/128", "192.168.1.7/32"},
		{"::ffff:192.168.1.7", "192.168.1.7/32"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"2001:db8::/32", "2001:db8::/32"},
	} {
		p, err := parseProxy(tc.in)
		if err != nil || p.String() != tc.want {
			t.Errorf("parseProxy(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	if p, err := parseProxy("::ffff:0.0.0.0/80"); err == nil {
		t.Errorf("parseProxy of a mapped /80 = %v, want an error", p)
	}
}

package site

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with Options.
type Problem struct {
	// Field is the option at fault, spelled as in PRISM's configuration
	// file: "hosts[1].dimensions[0].name", "strip_params[2]".
	Field string
	Msg   string
}

func (p Problem) Error() string { return p.Field + ": " + p.Msg }

// Viewport bounds of a dimension (0 means the renderer's default).
const (
	minViewport = 100
	maxViewport = 10000
)

// minRecacheInterval is the shortest per-host recache interval.
const minRecacheInterval = time.Minute

// Check returns every problem with opts, in order: hosts (ids, names,
// aliases, origins, schemes, intervals), their dimensions (ids, names,
// viewports, matchers, render user agents), strip params and static
// extensions. It is the one validator of these options: New refuses opts
// with any problem, and config reports them with their lines. A table
// without hosts is valid (it matches nothing).
func Check(opts Options) []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	ids := map[int]int{}         // host id -> index
	names := map[string]string{} // canonical name -> field that claims it
	for i, h := range opts.Hosts {
		hk := fmt.Sprintf("hosts[%d]", i)
		if h.ID <= 0 {
			add(hk+".id", "must be a positive integer, got %d", h.ID)
		} else if j, dup := ids[h.ID]; dup {
			add(hk+".id", "duplicate id %d (also hosts[%d])", h.ID, j)
		} else {
			ids[h.ID] = i
		}
		claim := func(field, name string) {
			if err := CheckHostName(name, true); err != nil {
				add(field, "%q %v", name, err)
				return
			}
			key, _ := canonicalHostName(name)
			if other, dup := names[key]; dup {
				add(field, "%q is already used by %s", name, other)
				return
			}
			names[key] = field
		}
		claim(hk+".name", h.Name)
		for j, a := range h.Aliases {
			claim(fmt.Sprintf("%s.aliases[%d]", hk, j), a)
		}
		if err := checkOrigin(h.Origin); err != nil {
			if h.Origin != nil {
				add(hk+".origin", "%q %v", h.Origin.Redacted(), err)
			} else {
				add(hk+".origin", "%v", err)
			}
		}
		if s := strings.ToLower(h.Scheme); s != "" && s != "http" && s != "https" {
			add(hk+".scheme", "must be \"http\" or \"https\", got %q", h.Scheme)
		}
		if h.RecacheInterval != 0 && h.RecacheInterval < minRecacheInterval {
			add(hk+".recache_interval", "must be 0 (use recache.interval) or at least %s, got %s", shortDuration(minRecacheInterval), h.RecacheInterval)
		}
		ps = append(ps, checkDimensions(hk, h.Dimensions)...)
	}
	for i, p := range opts.StripParams {
		if r := strings.TrimSuffix(strings.TrimSpace(p), "*"); r == "" {
			add(fmt.Sprintf("strip_params[%d]", i), "must not be empty")
		}
	}
	for i, e := range opts.StaticExtensions {
		if len(e) < 2 || e[0] != '.' || len(e) > maxExtLen || strings.ContainsAny(e[1:], "./?# ") {
			add(fmt.Sprintf("static_extensions[%d]", i), "%q is not an extension like \".css\" (a dot and up to %d characters)", e, maxExtLen-1)
		}
	}
	return ps
}

func checkDimensions(hk string, dims []Dimension) []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if len(dims) == 0 {
		add(hk+".dimensions", "at least one dimension is required")
	}
	ids := map[int]int{}
	names := map[string]int{}
	for i, d := range dims {
		dk := fmt.Sprintf("%s.dimensions[%d]", hk, i)
		if d.ID <= 0 {
			add(dk+".id", "must be a positive integer, got %d", d.ID)
		} else if j, dup := ids[d.ID]; dup {
			add(dk+".id", "duplicate id %d (also %s.dimensions[%d])", d.ID, hk, j)
		} else {
			ids[d.ID] = i
		}
		name := strings.ToLower(strings.TrimSpace(d.Name))
		if name == "" {
			add(dk+".name", "must not be empty")
		} else if j, dup := names[name]; dup {
			add(dk+".name", "duplicate name %q (also %s.dimensions[%d])", d.Name, hk, j)
		} else {
			names[name] = i
		}
		for _, f := range []struct {
			key string
			n   int
		}{{"width", d.Width}, {"height", d.Height}} {
			if f.n != 0 && (f.n < minViewport || f.n > maxViewport) {
				add(dk+"."+f.key, "must be between %d and %d, got %d", minViewport, maxViewport, f.n)
			}
		}
		for j, m := range d.MatchUA {
			if err := CheckMatcher(m); err != nil {
				add(fmt.Sprintf("%s.match_ua[%d]", dk, j), "%v", err)
			}
		}
		if strings.ContainsFunc(d.RenderUA, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			add(dk+".render_ua", "must not contain control characters")
		}
	}
	return ps
}

// CheckHostName reports why s is not a bare host name (with an optional
// port when allowPort), or nil.
func CheckHostName(s string, allowPort bool) error {
	if s == "" {
		return errorString("must not be empty")
	}
	if strings.Contains(s, "://") {
		return errorString("must be a host name, without a scheme")
	}
	if strings.ContainsAny(s, "/?#@ \t\\\x00") {
		return errorString("must be a host name, without a path, query or user")
	}
	host := s
	if allowPort {
		if h, p, err := net.SplitHostPort(s); err == nil {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return errorString("has an invalid port")
			}
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return nil
	}
	if host == "" || len(host) > 253 {
		return errorString("is not a valid host name")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return errorString("is not a valid host name")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return errorString("is not a valid host name")
			}
		}
	}
	return nil
}

var errOriginForm = errorString("must be an absolute http(s) URL such as \"http://127.0.0.1:3000\"")

func checkOrigin(u *url.URL) error {
	switch {
	case u == nil, u.Scheme != "http" && u.Scheme != "https":
		return errOriginForm
	case u.Host == "" || u.Hostname() == "":
		return errorString("has no host")
	case u.User != nil:
		return errorString("must not hold user information")
	case u.Opaque != "", u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return errorString("must not have a path, query or fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errorString("has an invalid port")
		}
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// shortDuration prints whole minutes and hours without their zero tails:
// "1m", not "1m0s"; "2h", not "2h0m0s"; "1m30s" stays.
func shortDuration(d time.Duration) string {
	s := d.String()
	if d%time.Minute == 0 {
		s = strings.TrimSuffix(s, "0s")
	}
	if d%time.Hour == 0 {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

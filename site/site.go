// Package site holds PRISM's model of the sites it fronts: hosts, their
// dimensions, crawler detection and URL normalization. It is pure data and
// functions: no I/O, safe for concurrent use once built.
package site

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Dimension is one way of rendering a host's pages (desktop, mobile, ...).
type Dimension struct {
	ID   int
	Name string
	// MatchUA lists user-agent matchers; the first dimension of a host with a
	// matching entry wins. A plain string matches as a case-insensitive
	// substring. "re:EXPR" is a Go regular expression (case-insensitive).
	// "@crawlers" matches the built-in list of search, social and AI
	// crawlers; "@search", "@social" and "@ai" match one group of it.
	MatchUA  []string
	Width    int
	Height   int
	Mobile   bool
	RenderUA string // empty: a desktop (or mobile, if Mobile) Chrome UA
}

// Host is one site PRISM fronts.
type Host struct {
	ID      int
	Name    string   // matched against the Host header, case-insensitively
	Aliases []string // further names for the same host
	Origin  *url.URL // where requests for this host are sent
	// Scheme is the public scheme pages are rendered under ("https" when empty).
	Scheme          string
	Dimensions      []Dimension
	RecacheInterval time.Duration // 0: the scheduler's default

	// Set by New on the Table's own copy.
	table    *Table
	matchers [][]matcher // per dimension
}

// Options configures a Table.
type Options struct {
	Hosts []Host
	// StripParams lists query parameters removed by Normalize. A trailing
	// "*" makes an entry a prefix. Nil means DefaultStripParams.
	StripParams []string
	// StaticExtensions lists file extensions (with the dot) never rendered.
	// Nil means DefaultStaticExtensions.
	StaticExtensions []string
}

// Table is the compiled set of hosts. It is safe for concurrent use.
type Table struct {
	hosts    []*Host
	byID     map[int]*Host
	byName   map[string]*Host // lower case, no trailing dot
	crawlers *tokenSet
	detected *detectCache
	strip    []stripRule
	static   map[string]bool // lower-case extensions with the dot
}

var (
	// ErrUnknownHost is returned when a URL names no configured host.
	ErrUnknownHost = errors.New("site: unknown host")
	// ErrInvalidURL is returned for URLs that cannot be normalized: paths
	// escaping the root, NUL bytes, invalid escapes, unsupported schemes.
	ErrInvalidURL = errors.New("site: invalid url")
)

// New compiles opts into a Table. It refuses opts with any problem Check
// finds, reporting all of them at once. The hosts are copied: later changes
// to opts do not affect the Table.
func New(opts Options) (*Table, error) {
	if ps := Check(opts); len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p
		}
		return nil, fmt.Errorf("site: %w", errors.Join(errs...))
	}
	t := &Table{
		byID:     make(map[int]*Host, len(opts.Hosts)),
		byName:   make(map[string]*Host, len(opts.Hosts)),
		crawlers: newTokenSet(),
		detected: newDetectCache(),
	}
	for i := range opts.Hosts {
		src := &opts.Hosts[i]
		o := *src.Origin
		if o.User != nil { // refused by Check; copied all the same
			u := *o.User
			o.User = &u
		}
		h := &Host{
			ID:              src.ID,
			Name:            src.Name,
			Aliases:         append([]string(nil), src.Aliases...),
			Origin:          &o,
			Scheme:          strings.ToLower(src.Scheme),
			Dimensions:      make([]Dimension, len(src.Dimensions)),
			RecacheInterval: src.RecacheInterval,
			table:           t,
			matchers:        make([][]matcher, len(src.Dimensions)),
		}
		if h.Scheme == "" {
			h.Scheme = "https"
		}
		t.byID[h.ID] = h
		for _, name := range append([]string{src.Name}, src.Aliases...) {
			key, _ := canonicalHostName(name)
			t.byName[key] = h
		}
		for j, d := range src.Dimensions {
			d.MatchUA = append([]string(nil), d.MatchUA...)
			h.Dimensions[j] = d
			ms, err := compileMatchers(d.MatchUA)
			if err != nil { // refused by Check
				return nil, fmt.Errorf("site: %w", err)
			}
			h.matchers[j] = ms
		}
		t.hosts = append(t.hosts, h)
	}

	strip := opts.StripParams
	if strip == nil {
		strip = DefaultStripParams()
	}
	for _, p := range strip {
		r, ok := strings.CutSuffix(strings.ToLower(strings.TrimSpace(p)), "*")
		t.strip = append(t.strip, stripRule{name: r, prefix: ok})
	}
	exts := opts.StaticExtensions
	if exts == nil {
		exts = DefaultStaticExtensions()
	}
	t.static = make(map[string]bool, len(exts))
	for _, e := range exts {
		t.static[strings.ToLower(e)] = true
	}
	return t, nil
}

// canonicalHostName lower-cases name and drops a trailing dot and any
// port. It reports false for names that cannot be host names.
func canonicalHostName(name string) (string, bool) {
	name = stripPort(name)
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || strings.ContainsAny(name, " /?#@\\\x00") {
		return "", false
	}
	return name, true
}

// stripPort removes a ":port" suffix and IPv6 brackets from hostport.
func stripPort(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && i > strings.LastIndexByte(hostport, ']') {
		hostport = hostport[:i]
	}
	if len(hostport) >= 2 && hostport[0] == '[' && hostport[len(hostport)-1] == ']' {
		hostport = hostport[1 : len(hostport)-1]
	}
	return hostport
}

// Hosts returns every host, in configuration order. The hosts belong to the
// Table and must not be modified.
func (t *Table) Hosts() []*Host { return append([]*Host(nil), t.hosts...) }

// ByID returns the host with the given id.
func (t *Table) ByID(id int) (*Host, bool) {
	h, ok := t.byID[id]
	return h, ok
}

// Match returns the host whose name or alias equals hostport (port and
// trailing dot ignored, case-insensitive). It does not allocate for names
// up to 256 bytes.
func (t *Table) Match(hostport string) (*Host, bool) {
	name := stripPort(hostport)
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if name == "" {
		return nil, false
	}
	var buf [256]byte
	low := appendLowerASCII(buf[:0], name)
	h, ok := t.byName[string(low)]
	return h, ok
}

// Origin returns the origin of the host named hostport, for the browser's
// request routing.
func (t *Table) Origin(hostport string) (*url.URL, bool) {
	h, ok := t.Match(hostport)
	if !ok {
		return nil, false
	}
	return h.Origin, true
}

// Dimension returns h's dimension with the given id.
func (h *Host) Dimension(id int) (*Dimension, bool) {
	for i := range h.Dimensions {
		if h.Dimensions[i].ID == id {
			return &h.Dimensions[i], true
		}
	}
	return nil, false
}

// DimensionByName returns h's dimension with the given name
// (case-insensitive).
func (h *Host) DimensionByName(name string) (*Dimension, bool) {
	for i := range h.Dimensions {
		if strings.EqualFold(h.Dimensions[i].Name, name) {
			return &h.Dimensions[i], true
		}
	}
	return nil, false
}

// PublicURL returns the absolute URL a normalized URL has on h, e.g.
// "https://example.com/a?x=1".
func (h *Host) PublicURL(normalized string) string {
	scheme := h.Scheme
	if scheme == "" {
		scheme = "https"
	}
	if !strings.HasPrefix(normalized, "/") {
		normalized = "/" + normalized
	}
	return scheme + "://" + h.Name + normalized
}

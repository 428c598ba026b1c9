// Package site holds PRISM's model of the sites it fronts: hosts, their
// dimensions, crawler detection and URL normalization. It is pure data and
// functions: no I/O, safe for concurrent use once built.
package site

import (
	"errors"
	"net/url"
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
	opts Options
}

// ErrUnknownHost is returned when a URL names no configured host.
var ErrUnknownHost = errors.New("site: unknown host")

// New compiles opts into a Table, checking ids and matchers.
func New(opts Options) (*Table, error) {
	return &Table{opts: opts}, nil
}

// Hosts returns every host, in configuration order.
func (t *Table) Hosts() []*Host { return nil }

// ByID returns the host with the given id.
func (t *Table) ByID(id int) (*Host, bool) { return nil, false }

// Match returns the host whose name or alias equals hostport (port and
// trailing dot ignored, case-insensitive).
func (t *Table) Match(hostport string) (*Host, bool) { return nil, false }

// Detect returns the first of h's dimensions whose matchers match ua.
func (t *Table) Detect(h *Host, ua string) (*Dimension, bool) { return nil, false }

// IsStatic reports whether path names a static asset (by extension).
func (t *Table) IsStatic(path string) bool { return false }

// Normalize returns the cache form of u: its escaped path (cleaned, never
// escaping the root) and its query with parameters sorted and tracking
// parameters removed, e.g. "/a/b?x=1&y=2". It fails for paths that escape
// the root or hold NUL bytes or invalid escapes.
func (t *Table) Normalize(u *url.URL) (string, error) { return "", nil }

// Resolve parses raw, either a path ("/page?x=1") resolved against h, or an
// absolute http(s) URL whose host must be h (when h is non-nil) or any
// configured host (when h is nil). It returns the host and normalized URL.
func (t *Table) Resolve(raw string, h *Host) (*Host, string, error) { return nil, "", nil }

// Origin returns the origin of the host named hostport, for the browser's
// request routing.
func (t *Table) Origin(hostport string) (*url.URL, bool) { return nil, false }

// Dimension returns h's dimension with the given id.
func (h *Host) Dimension(id int) (*Dimension, bool) { return nil, false }

// DimensionByName returns h's dimension with the given name.
func (h *Host) DimensionByName(name string) (*Dimension, bool) { return nil, false }

// PublicURL returns the absolute URL a normalized URL has on h, e.g.
// "https://example.com/a?x=1".
func (h *Host) PublicURL(normalized string) string { return "" }

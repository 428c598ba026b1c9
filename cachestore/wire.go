package cachestore

import (
	"fmt"
	"math"
	"strings"

	"github.com/gobwas/glob"
)

// Marshal encodes e in the store's checksummed file format, for another
// tier (a cluster's shared store). e must be valid as Put requires.
func Marshal(e *Entry) ([]byte, error) {
	if err := validateEntry(e, math.MaxInt64); err != nil {
		return nil, err
	}
	return encodeEntry(e), nil
}

// Unmarshal decodes what Marshal encoded, checking it as the disk tier
// checks its files (what another tier holds is not trusted): an error for
// anything but a complete, checksummed, well-formed entry whose body is at
// most maxBody bytes (0: no bound). The returned Body aliases b.
func Unmarshal(b []byte, maxBody int64) (*Entry, error) {
	if maxBody <= 0 {
		maxBody = math.MaxInt64
	}
	e, err := decodeEntry(b, maxBody)
	if err != nil {
		return nil, fmt.Errorf("cachestore: %w", err)
	}
	if err := validateEntry(e, maxBody); err != nil {
		return nil, fmt.Errorf("cachestore: %w", err)
	}
	return e, nil
}

// Pattern selects keys for a glob purge: a glob over the URL path with '/'
// as separator (`*` within a segment, `**` across segments), optionally
// restricted to one host.
type Pattern struct {
	hostID int // 0: every host
	src    string
	g      *glob.Pattern
}

// Glob returns the pattern's source.
func (p *Pattern) Glob() string { return p.src }

// HostID returns the host the pattern is restricted to (0: every host).
func (p *Pattern) HostID() int { return p.hostID }

// Prefix returns the literal text every URL the pattern selects starts
// with: the glob up to its first special character (* ? [ { \). An index
// sorted by URL need only be read from there.
func (p *Pattern) Prefix() string {
	if i := strings.IndexAny(p.src, `*?[{\`); i >= 0 {
		return p.src[:i]
	}
	return p.src
}

// NewPattern compiles glob for keys of hostID (0: every host).
func NewPattern(hostID int, pattern string) (*Pattern, error) {
	c := glob.Compiler{Separators: []rune{'/'}, Globstar: true}
	g, err := c.Compile(pattern)
	if err != nil {
		return nil, err
	}
	return &Pattern{hostID: hostID, src: pattern, g: g}, nil
}

// Match reports whether k is selected: the glob matches its path (query
// stripped) or its whole normalized URL (path and query).
func (p *Pattern) Match(k Key) bool {
	if p.hostID != 0 && k.HostID != p.hostID {
		return false
	}
	path, _, hasQuery := strings.Cut(k.URL, "?")
	return p.g.Match(path) || (hasQuery && p.g.Match(k.URL))
}

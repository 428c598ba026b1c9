package site

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"regexp"
	"strings"
	"sync/atomic"
)

// matcherKind says how a compiled matcher tests a user agent.
type matcherKind uint8

const (
	matchSubstring matcherKind = iota
	matchRegexp
	matchGroup
)

// matcher is one compiled MatchUA entry.
type matcher struct {
	kind   matcherKind
	sub    []byte         // matchSubstring: lower-case needle
	re     *regexp.Regexp // matchRegexp: case-insensitive
	groups crawlerGroup   // matchGroup
}

// CrawlerLists are the "@name" matchers of the built-in crawler list.
var CrawlerLists = []string{"@crawlers", "@search", "@social", "@ai", "@seo"}

// CheckMatcher reports why e is not a valid MatchUA entry, or nil: the one
// check, used by New and by configuration validation.
func CheckMatcher(e string) error {
	_, err := compileMatcher(e)
	return err
}

func compileMatcher(e string) (matcher, error) {
	switch {
	case strings.HasPrefix(e, "re:"):
		expr := e[len("re:"):]
		if expr == "" {
			return matcher{}, errors.New("empty regular expression")
		}
		re, err := regexp.Compile("(?i)" + expr)
		if err != nil {
			return matcher{}, fmt.Errorf("bad regular expression: %w", err)
		}
		return matcher{kind: matchRegexp, re: re}, nil
	case strings.HasPrefix(e, "@"):
		g, ok := groupByName(strings.ToLower(e))
		if !ok {
			return matcher{}, fmt.Errorf("unknown crawler list %q: unknown group (want one of %s)", e, strings.Join(CrawlerLists, ", "))
		}
		return matcher{kind: matchGroup, groups: g}, nil
	case strings.TrimSpace(e) == "":
		return matcher{}, errors.New("must not be empty (it would match every user agent)")
	}
	return matcher{kind: matchSubstring, sub: appendLowerASCII(nil, e)}, nil
}

// compileMatchers compiles a dimension's MatchUA entries.
func compileMatchers(entries []string) ([]matcher, error) {
	ms := make([]matcher, 0, len(entries))
	for _, e := range entries {
		m, err := compileMatcher(e)
		if err != nil {
			return nil, fmt.Errorf("match_ua %q: %w", e, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// tokenSet finds which built-in crawler groups a lower-cased user agent
// belongs to in one pass: a table indexed by every two-byte pair holds the
// tokens starting with that pair, so almost every position is rejected by
// one load and only real candidates are compared.
type tokenSet struct {
	tokens []token
	lists  [][]int32            // token indexes; lists[0] is empty
	byPair [1 << 16]uint16      // index into lists by the token's first two bytes
	pairs  [1 << 16 / 64]uint64 // bit set of byPair's non-zero entries: 8 KiB stays in L1
}

type token struct {
	s     []byte
	group crawlerGroup
}

func newTokenSet() *tokenSet {
	ts := &tokenSet{lists: [][]int32{nil}}
	add := func(list []string, g crawlerGroup) {
		for _, s := range list {
			b := appendLowerASCII(nil, s)
			if len(b) < 2 {
				continue // never: every built-in token is longer
			}
			pair := uint16(b[0])<<8 | uint16(b[1])
			if ts.byPair[pair] == 0 {
				ts.byPair[pair] = uint16(len(ts.lists))
				ts.lists = append(ts.lists, nil)
				ts.pairs[pair>>6] |= 1 << (pair & 63)
			}
			li := ts.byPair[pair]
			ts.lists[li] = append(ts.lists[li], int32(len(ts.tokens)))
			ts.tokens = append(ts.tokens, token{s: b, group: g})
		}
	}
	add(searchCrawlers, groupSearch)
	add(socialCrawlers, groupSocial)
	add(aiCrawlers, groupAI)
	add(seoCrawlers, groupSEO)
	return ts
}

// scan returns the groups whose tokens occur in ua (lower case).
func (ts *tokenSet) scan(ua []byte) crawlerGroup {
	var found crawlerGroup
	for i := 0; i+1 < len(ua); i++ {
		pair := uint16(ua[i])<<8 | uint16(ua[i+1])
		if ts.pairs[pair>>6]&(1<<(pair&63)) == 0 {
			continue
		}
		li := ts.byPair[pair]
		rest := ua[i:]
		for _, idx := range ts.lists[li] {
			t := &ts.tokens[idx]
			if found&t.group == 0 && bytes.HasPrefix(rest, t.s) {
				found |= t.group
				if found == groupAll {
					return found
				}
			}
		}
	}
	return found
}

// appendLowerASCII appends s to dst with ASCII letters lower-cased. User
// agents are ASCII in practice; other bytes are compared as they are.
func appendLowerASCII(dst []byte, s string) []byte {
	n := len(dst)
	dst = append(dst, s...)
	b := dst[n:]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return dst
}

// Detect returns the first of h's dimensions whose matchers match ua.
// Matching is ASCII case-insensitive; it does not allocate for user agents
// up to 512 bytes.
func (t *Table) Detect(h *Host, ua string) (*Dimension, bool) {
	if h == nil || ua == "" {
		return nil, false
	}
	dims := h.matchers
	if dims == nil || h.table != t {
		// A Host not obtained from t: use t's copy of it.
		th, ok := t.byID[h.ID]
		if !ok {
			return nil, false
		}
		h = th
		dims = th.matchers
	}
	if d, ok := t.detected.get(h, ua); ok {
		if d < 0 {
			return nil, false
		}
		return &h.Dimensions[d], true
	}
	d := t.detect(h, dims, ua)
	t.detected.put(h, ua, d)
	if d < 0 {
		return nil, false
	}
	return &h.Dimensions[d], true
}

// detect returns the index of the first of h's dimensions matching ua, or -1.
func (t *Table) detect(h *Host, dims [][]matcher, ua string) int {
	var buf [512]byte
	low := appendLowerASCII(buf[:0], ua)
	scanned := false
	var groups crawlerGroup
	for di, ms := range dims {
		for i := range ms {
			m := &ms[i]
			var ok bool
			switch m.kind {
			case matchSubstring:
				ok = bytes.Contains(low, m.sub)
			case matchRegexp:
				ok = m.re.MatchString(ua)
			case matchGroup:
				if !scanned {
					groups = t.crawlers.scan(low)
					scanned = true
				}
				ok = groups&m.groups != 0
			}
			if ok {
				return di
			}
		}
	}
	return -1
}

// detectCache remembers Detect's answer for recent (host, user agent)
// pairs. Crawlers send a handful of distinct user agents, and matching one
// against the built-in crawler list is the costliest step of a cache hit.
// It is direct-mapped and lock-free: a collision only means recomputing.
// User agents longer than maxCachedUA are not remembered, so hostile
// clients cannot pin large strings.
type detectCache struct {
	seed  maphash.Seed
	slots [1024]atomic.Pointer[detectSlot]
}

type detectSlot struct {
	host *Host
	ua   string
	dim  int // index into host.Dimensions; -1: no dimension matches
}

const maxCachedUA = 512

func newDetectCache() *detectCache { return &detectCache{seed: maphash.MakeSeed()} }

func (c *detectCache) slot(h *Host, ua string) *atomic.Pointer[detectSlot] {
	i := (maphash.String(c.seed, ua) ^ uint64(h.ID)*0x9e3779b97f4a7c15) % uint64(len(c.slots))
	return &c.slots[i]
}

func (c *detectCache) get(h *Host, ua string) (int, bool) {
	if len(ua) > maxCachedUA {
		return 0, false
	}
	s := c.slot(h, ua).Load()
	if s == nil || s.host != h || s.ua != ua {
		return 0, false
	}
	return s.dim, true
}

func (c *detectCache) put(h *Host, ua string, dim int) {
	if len(ua) > maxCachedUA {
		return
	}
	c.slot(h, ua).Store(&detectSlot{host: h, ua: strings.Clone(ua), dim: dim})
}

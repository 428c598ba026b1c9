package proxy

import (
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/site"
)

// headerValues holds ready-made header values for cache hits. The slices
// are shared by every response: they have len == cap, so a later Add by
// anyone copies instead of writing into them, and net/http only reads them.
type headerValues struct {
	hit, miss, stale, bypass []string
	vary, gzip, one          []string
	dims                     map[*site.Dimension][]string // read-only after New
	lm                       memo[int64]                  // Last-Modified by Unix second
	lengths                  memo[uint64]                 // Content-Length
	etagSeed                 maphash.Seed
	etags                    memo[string] // ETag
}

// memo remembers formatted header values in a small direct-mapped,
// lock-free table: each slot holds one key and its value, and a miss
// formats the value and replaces the slot. Hot entries share few values,
// so a hit finds them without allocating a string and a slice per response.
type memo[K comparable] [256]atomic.Pointer[memoSlot[K]]

type memoSlot[K comparable] struct {
	k K
	v []string
}

// get returns the value remembered for k in slot i (taken modulo the table
// size). On a miss, format returns the key to remember (k, or a copy of it)
// and the value.
func (m *memo[K]) get(k K, i uint64, format func() (K, string)) []string {
	slot := &m[i%uint64(len(m))]
	if s := slot.Load(); s != nil && s.k == k {
		return s.v
	}
	key, val := format()
	s := &memoSlot[K]{k: key, v: []string{val}}
	slot.Store(s)
	return s.v
}

// maxRememberedETag bounds the tags etag remembers (PRISM's own are 18 bytes).
const maxRememberedETag = 128

func newHeaderValues(sites *site.Table) *headerValues {
	v := &headerValues{
		hit: []string{fill.CacheHit.String()}, miss: []string{fill.CacheMiss.String()}, stale: []string{fill.CacheStale.String()}, bypass: []string{fill.CacheBypass.String()},
		vary:     []string{"User-Agent, Accept-Encoding"},
		gzip:     []string{"gzip"},
		one:      []string{"1"},
		dims:     make(map[*site.Dimension][]string),
		etagSeed: maphash.MakeSeed(),
	}
	if sites != nil {
		for _, h := range sites.Hosts() {
			for i := range h.Dimensions {
				d := &h.Dimensions[i]
				v.dims[d] = []string{d.Name}
			}
		}
	}
	return v
}

func (v *headerValues) state(s fill.CacheState) []string {
	switch s {
	case fill.CacheHit:
		return v.hit
	case fill.CacheMiss:
		return v.miss
	case fill.CacheStale:
		return v.stale
	}
	return v.bypass
}

// dimension returns the X-Prism-Dimension value for d.
func (v *headerValues) dimension(d *site.Dimension) []string {
	if s, ok := v.dims[d]; ok {
		return s
	}
	return []string{d.Name}
}

// lastModified returns t formatted for Last-Modified (formatting a date is
// most of a header's cost), remembered per Unix second.
func (v *headerValues) lastModified(t time.Time) []string {
	unix := t.Unix()
	return v.lm.get(unix, uint64(unix), func() (int64, string) { return unix, t.UTC().Format(http.TimeFormat) })
}

// contentLength returns n formatted for Content-Length, remembered.
func (v *headerValues) contentLength(n uint64) []string {
	return v.lengths.get(n, n, func() (uint64, string) { return n, strconv.FormatUint(n, 10) })
}

// etag returns the ETag header value etag, remembered. The remembered
// string is a copy, so it never keeps an entry's buffer alive; unusually
// long tags are not remembered.
func (v *headerValues) etag(etag string) []string {
	if len(etag) > maxRememberedETag {
		return []string{etag}
	}
	return v.etags.get(etag, maphash.String(v.etagSeed, etag), func() (string, string) {
		c := strings.Clone(etag)
		return c, c
	})
}

package proxy

import (
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/site"
)

// headerValues holds ready-made header values for cache hits. The slices
// are shared by every response: they have len == cap, so a later Add by
// anyone copies instead of writing into them, and net/http only reads them.
type headerValues struct {
	hit, miss, stale, bypass []string
	vary, gzip, one          []string
	dims                     map[*site.Dimension][]string // read-only after New
	lm                       [256]atomic.Pointer[lastModifiedSlot]
	lengths                  [256]atomic.Pointer[lengthSlot]
	etagSeed                 maphash.Seed
	etags                    [256]atomic.Pointer[etagSlot]
}

type lastModifiedSlot struct {
	unix int64
	v    []string
}

type lengthSlot struct {
	n uint64
	v []string
}

// maxRememberedETag bounds the tags etag remembers (PRISM's own are 18 bytes).
const maxRememberedETag = 128

type etagSlot struct {
	etag string
	v    []string
}

func newHeaderValues(sites *site.Table) *headerValues {
	v := &headerValues{
		hit: []string{cacheHit}, miss: []string{cacheMiss}, stale: []string{cacheStale}, bypass: []string{cacheBypass},
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

func (v *headerValues) state(s string) []string {
	switch s {
	case cacheHit:
		return v.hit
	case cacheMiss:
		return v.miss
	case cacheStale:
		return v.stale
	case cacheBypass:
		return v.bypass
	}
	return []string{s}
}

// dimension returns the X-Prism-Dimension value for d.
func (v *headerValues) dimension(d *site.Dimension) []string {
	if s, ok := v.dims[d]; ok {
		return s
	}
	return []string{d.Name}
}

// lastModified returns t formatted for Last-Modified. Formatting a date is
// most of a header's cost, and hot entries share few render times, so the
// answers are remembered in a small direct-mapped, lock-free table.
func (v *headerValues) lastModified(t time.Time) []string {
	unix := t.Unix()
	slot := &v.lm[uint64(unix)%uint64(len(v.lm))]
	if s := slot.Load(); s != nil && s.unix == unix {
		return s.v
	}
	s := &lastModifiedSlot{unix: unix, v: []string{t.UTC().Format(http.TimeFormat)}}
	slot.Store(s)
	return s.v
}

// contentLength returns n formatted for Content-Length. Hot entries have few
// distinct sizes, so like lastModified the answers are remembered in a small
// direct-mapped, lock-free table instead of allocating a string and a slice
// per response.
func (v *headerValues) contentLength(n uint64) []string {
	slot := &v.lengths[n%uint64(len(v.lengths))]
	if s := slot.Load(); s != nil && s.n == n {
		return s.v
	}
	s := &lengthSlot{n: n, v: []string{strconv.FormatUint(n, 10)}}
	slot.Store(s)
	return s.v
}

// etag returns the ETag header value etag, remembered like contentLength.
// The remembered string is a copy, so it never keeps an entry's buffer alive;
// unusually long tags are not remembered.
func (v *headerValues) etag(etag string) []string {
	if len(etag) > maxRememberedETag {
		return []string{etag}
	}
	slot := &v.etags[maphash.String(v.etagSeed, etag)%uint64(len(v.etags))]
	if s := slot.Load(); s != nil && s.etag == etag {
		return s.v
	}
	c := strings.Clone(etag)
	s := &etagSlot{etag: c, v: []string{c}}
	slot.Store(s)
	return s.v
}

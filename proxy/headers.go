package proxy

import (
	"net/http"
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
}

type lastModifiedSlot struct {
	unix int64
	v    []string
}

func newHeaderValues(sites *site.Table) *headerValues {
	v := &headerValues{
		hit: []string{cacheHit}, miss: []string{cacheMiss}, stale: []string{cacheStale}, bypass: []string{cacheBypass},
		vary: []string{"User-Agent, Accept-Encoding"},
		gzip: []string{"gzip"},
		one:  []string{"1"},
		dims: make(map[*site.Dimension][]string),
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

package recache

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/prismproxy/prism/cachestore"
)

// servedSet remembers which keys crawlers were served since their last
// autorecache, for Options.ServedOnly. It is a lossy, lock-free table of
// 32-bit fingerprints: marking costs a hash and an atomic store on the
// crawler's request. When two keys share a slot the later one wins, and the
// other merely misses one autorecache (it goes stale, and its next stale hit
// queues the recache), so a collision costs freshness, never correctness.
type servedSet struct {
	seed  maphash.Seed
	slots []atomic.Uint32
}

const servedSlots = 1 << 20 // 4 MiB

// servedSetIf returns a servedSet when on, else nil.
func servedSetIf(on bool) *servedSet {
	if !on {
		return nil
	}
	return newServedSet()
}

func newServedSet() *servedSet {
	return &servedSet{seed: maphash.MakeSeed(), slots: make([]atomic.Uint32, servedSlots)}
}

func (s *servedSet) hash(k cachestore.Key) (slot *atomic.Uint32, fp uint32) {
	sum := maphash.Comparable(s.seed, k)
	return &s.slots[sum%servedSlots], uint32(sum>>32) | 1 // never 0: 0 is "empty"
}

func (s *servedSet) mark(k cachestore.Key) {
	slot, fp := s.hash(k)
	if slot.Load() != fp { // skip the write (and the cache line bounce) when already marked
		slot.Store(fp)
	}
}

// take reports whether k was marked, and clears the mark.
func (s *servedSet) take(k cachestore.Key) bool {
	slot, fp := s.hash(k)
	return slot.CompareAndSwap(fp, 0)
}

// Served records that a crawler was served k from the cache (for
// Options.ServedOnly; a no-op otherwise). It never blocks.
func (s *Scheduler) Served(k cachestore.Key) {
	if s.served != nil {
		s.served.mark(k)
	}
}

package cachestore

import (
	"cmp"
	"container/heap"
	"context"
	"slices"
)

// Eviction keeps the disk tier under Options.MaxDiskBytes. A Put that takes
// the indexed file bytes past the bound only wakes Run (a non-blocking
// send); Run then removes the entries rendered longest ago until the bytes
// are at most the low-water mark, so one pass makes room for many Puts.
// Eviction waits for the index rebuild: before it ends the index does not
// know every file, and the oldest files may be among those it has not read
// yet. The rebuild wakes eviction when it ends.
//
// An evicted entry goes the way of a purged one (tombstoneLocked under its
// shard's lock, the memory copy deleted, the file queued for the removal
// worker), so Get, a concurrent Put of the same key and the removal worker
// stay ordered by the shard lock exactly as with Delete. Eviction is not a
// purge: it does not change Generation, so a render in flight is still
// stored (its page is new).

// lowWaterPercent is how full a pass leaves the disk tier, in percent of
// MaxDiskBytes.
const lowWaterPercent = 90

// lowWater returns the bytes an eviction pass brings the disk tier down to.
// (Computed in two terms so that no bound overflows.)
func (s *Store) lowWater() int64 {
	return s.maxDisk/100*lowWaterPercent + s.maxDisk%100*lowWaterPercent/100
}

// wakeEvict asks Run for an eviction pass without waiting for it.
func (s *Store) wakeEvict() {
	if s.maxDisk <= 0 {
		return
	}
	select {
	case s.evictSignal <- struct{}{}:
	default: // a pass is already pending
	}
}

// evictCandidate is an indexed entry an eviction pass may remove.
type evictCandidate struct {
	ik    string     // packKey form
	ie    indexEntry // as seen when chosen: removed only if still the same
	shard int
}

// newerFirst is a max-heap of candidates by RenderedAt: its top is the
// newest of the oldest entries chosen so far, the first to give back.
type newerFirst []evictCandidate

func (h newerFirst) Len() int           { return len(h) }
func (h newerFirst) Less(i, j int) bool { return olderThan(h[j].ie, h[i].ie) }
func (h newerFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *newerFirst) Push(x any)        { *h = append(*h, x.(evictCandidate)) }
func (h *newerFirst) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// olderThan reports whether a was rendered before b.
func olderThan(a, b indexEntry) bool {
	if a.sec != b.sec {
		return a.sec < b.sec
	}
	return a.bits&(1<<ieNsecBits-1) < b.bits&(1<<ieNsecBits-1)
}

// evict runs one eviction pass if the disk tier is over MaxDiskBytes and
// logs what it removed. It returns the number of entries removed.
func (s *Store) evict(ctx context.Context) int {
	if s.maxDisk <= 0 || s.diskBytes.Load() <= s.maxDisk {
		return 0
	}
	before := s.diskBytes.Load()
	n, bytes := s.evictTo(ctx, s.lowWater())
	if n > 0 {
		s.log.Info("cachestore: evicted the oldest entries to keep the disk tier under its bound",
			"count", n, "bytes", bytes, "disk_bytes_before", before, "disk_bytes", s.diskBytes.Load(),
			"max_disk_bytes", s.maxDisk)
	}
	return n
}

// evictTo removes the entries rendered longest ago until the indexed file
// bytes are at most target, and returns how many entries and file bytes it
// removed. An entry changed since it was chosen (a Put renewed it, a purge
// removed it) is left alone, so the result may stay above target: Puts
// that take the disk tier past the bound meanwhile wake the next pass.
func (s *Store) evictTo(ctx context.Context, target int64) (int, int64) {
	need := s.diskBytes.Load() - target
	if need <= 0 {
		return 0, 0
	}
	// Keep the oldest entries whose files add up to need: the heap holds
	// about what the pass removes, not the whole index.
	var h newerFirst
	var chosen int64
	for i := range s.shards {
		if ctx.Err() != nil {
			return 0, 0
		}
		sh := &s.shards[i]
		sh.mu.RLock()
		for ik, ie := range sh.entries.all() {
			size := ie.fileSize()
			if size == 0 {
				continue // memory-only: nothing on disk
			}
			if chosen >= need && !olderThan(ie, h[0].ie) {
				continue
			}
			heap.Push(&h, evictCandidate{ik: ik, ie: ie, shard: i})
			chosen += size
			for chosen-h[0].ie.fileSize() >= need {
				chosen -= heap.Pop(&h).(evictCandidate).ie.fileSize()
			}
		}
		sh.mu.RUnlock()
	}

	// Remove them shard by shard, each shard locked once.
	slices.SortFunc(h, func(a, b evictCandidate) int { return cmp.Compare(a.shard, b.shard) })
	var n int
	var bytes int64
	var removed []string
	for start := 0; start < len(h); {
		end := start + 1
		for end < len(h) && h[end].shard == h[start].shard {
			end++
		}
		sh := &s.shards[h[start].shard]
		removed = removed[:0]
		sh.mu.Lock()
		for _, c := range h[start:end] {
			if ie, ok := sh.entries.get(c.ik); !ok || ie != c.ie {
				continue
			}
			s.tombstoneLocked(sh, c.ik)
			removed = append(removed, c.ik)
			bytes += c.ie.fileSize()
		}
		if len(removed) > 0 {
			sh.seq++
		}
		sh.mu.Unlock()
		s.enqueueRemoval(removed...)
		n += len(removed)
		start = end
	}
	if n > 0 {
		s.mem.Wait() // as in Delete: no promotion queued before the Del survives it
		s.evictions.Add(uint64(n))
		s.evictCount.Add(n)
		s.evictBytes.AddInt64(bytes)
	}
	return n, bytes
}

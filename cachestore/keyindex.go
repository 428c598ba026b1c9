package cachestore

import (
	"hash/maphash"
	"iter"
	"unsafe"
)

// keyIndex is one shard's map from packed keys (packKey) to index entries,
// laid out so that the garbage collector has nothing to trace per key: the
// keys sit back to back in one byte arena, the entries in one slice of
// pointer-free slots, and a map[uint32]uint32 leads from a key's hash to its
// slot. With a map[string]indexEntry every key was a heap pointer that each
// GC cycle had to mark; at a million keys that made cycles long enough to
// show in request latency (mark assists land on request goroutines).
//
// Keys whose hashes collide are chained through their slots' next fields,
// so a lookup compares the key bytes of every slot on its chain.
//
// A deleted key's slot and arena bytes become garbage; once the garbage
// slots outnumber the live ones (and at least compactMin of them), del
// rebuilds the index into fresh allocations, which also lets the Go map
// shrink (maps never shrink on delete). So a shard holds at most about twice
// its live keys, and compaction costs O(1) amortized per delete.
//
// The key strings keyIndex hands out (all, and what the callers derive from
// them: unpackKey's URL, tombstones, the removal queue) are made with
// unsafe.String over the arena and never copied. That is safe because arena
// bytes, once written, are never written again: set only appends (which
// writes past every existing key, into a new array when it grows) and
// compaction copies into a new arena. A string thus keeps its old arena
// alive and unchanged for as long as it is held.
//
// A keyIndex is not safe for concurrent use; the shard's lock guards it.
type keyIndex struct {
	seed maphash.Seed
	// mask selects the hash bits used: all of them, but tests clear some
	// to make distinct keys collide. (A function field would do too, but
	// the indirect call would make every key looked up escape to the heap.)
	mask  uint32
	heads map[uint32]uint32 // hash -> first slot of its chain, plus 1
	slots []slot            // in the order of their keys in arena
	arena []byte            // the packed keys of slots, back to back
	live  int               // slots holding a key
	dead  int               // slots of deleted keys, reclaimed by compact
	// deadBytes is the arena bytes of the dead slots' keys.
	deadBytes int
}

// slot is one key's place in a keyIndex, 32 bytes and no pointers. Its key
// is arena[off:] up to the next slot's off (or the arena's end): slots are
// only appended, in arena order, so the length need not be stored. A shard's
// arena stays far below 4 GiB (256 shards of it would be 1 TiB of keys).
type slot struct {
	off  uint32
	next uint32 // next slot on the hash chain, plus 1; 0: end of chain; deadSlot: deleted
	ie   indexEntry
}

const deadSlot = ^uint32(0)

// compactMin is the fewest dead slots worth a compaction.
const compactMin = 64

func newKeyIndex(seed maphash.Seed) keyIndex {
	return keyIndex{seed: seed, mask: ^uint32(0), heads: make(map[uint32]uint32)}
}

// hash returns the hash of the packed key ik. 32 bits are plenty: a shard
// holds thousands of keys, and the rare collision only lengthens a chain.
func (ix *keyIndex) hash(ik string) uint32 {
	return uint32(maphash.String(ix.seed, ik)) & ix.mask
}

// key returns slot i's key, sharing the arena's bytes (see keyIndex).
func (ix *keyIndex) key(i int) string {
	end := len(ix.arena)
	if i+1 < len(ix.slots) {
		end = int(ix.slots[i+1].off)
	}
	off := int(ix.slots[i].off)
	return unsafe.String(&ix.arena[off], end-off)
}

// find returns the slot of ik, whose hash is h, and the slot before it on
// the chain (-1 when it heads the chain); i is -1 when ik is not indexed.
func (ix *keyIndex) find(h uint32, ik string) (i, prev int) {
	prev = -1
	for j := int(ix.heads[h]) - 1; j >= 0; j = int(ix.slots[j].next) - 1 {
		if ix.key(j) == ik {
			return j, prev
		}
		prev = j
	}
	return -1, -1
}

// len returns the number of keys indexed.
func (ix *keyIndex) len() int { return ix.live }

// get returns ik's entry.
func (ix *keyIndex) get(ik string) (indexEntry, bool) {
	i, _ := ix.find(ix.hash(ik), ik)
	if i < 0 {
		return indexEntry{}, false
	}
	return ix.slots[i].ie, true
}

// set records ie for ik and returns the entry it replaced, if any.
func (ix *keyIndex) set(ik string, ie indexEntry) (old indexEntry, replaced bool) {
	h := ix.hash(ik)
	if i, _ := ix.find(h, ik); i >= 0 {
		old = ix.slots[i].ie
		ix.slots[i].ie = ie
		return old, true
	}
	off := uint32(len(ix.arena))
	ix.arena = append(ix.arena, ik...)
	ix.slots = append(ix.slots, slot{off: off, next: ix.heads[h], ie: ie})
	ix.heads[h] = uint32(len(ix.slots))
	ix.live++
	return indexEntry{}, false
}

// del forgets ik and returns its entry, if it was indexed. It may compact
// the index, so it must not be called while ranging over all.
func (ix *keyIndex) del(ik string) (indexEntry, bool) {
	h := ix.hash(ik)
	i, prev := ix.find(h, ik)
	if i < 0 {
		return indexEntry{}, false
	}
	s := &ix.slots[i]
	switch {
	case prev >= 0:
		ix.slots[prev].next = s.next
	case s.next != 0:
		ix.heads[h] = s.next
	default:
		delete(ix.heads, h)
	}
	old := s.ie
	ix.deadBytes += len(ix.key(i))
	s.next, s.ie = deadSlot, indexEntry{}
	ix.live--
	ix.dead++
	if ix.dead >= compactMin && ix.dead > ix.live {
		ix.compact()
	}
	return old, true
}

// compact moves the live keys into fresh allocations, dropping the dead
// slots and their arena bytes. Slot numbers change; strings handed out
// before stay valid (see keyIndex).
func (ix *keyIndex) compact() {
	slots := make([]slot, 0, ix.live)
	arena := make([]byte, 0, len(ix.arena)-ix.deadBytes)
	heads := make(map[uint32]uint32, ix.live)
	for i, s := range ix.slots {
		if s.next == deadSlot {
			continue
		}
		ik := ix.key(i)
		h := ix.hash(ik)
		s.off = uint32(len(arena))
		arena = append(arena, ik...)
		s.next = heads[h]
		slots = append(slots, s)
		heads[h] = uint32(len(slots))
	}
	ix.slots, ix.arena, ix.heads = slots, arena, heads
	ix.dead, ix.deadBytes = 0, 0
}

// all yields every indexed key and its entry. The index must not change
// during the iteration (collect keys to delete, then delete them). The key
// strings share the arena's bytes and stay valid afterwards (see keyIndex).
func (ix *keyIndex) all() iter.Seq2[string, indexEntry] {
	return func(yield func(string, indexEntry) bool) {
		for i := range ix.slots {
			if ix.slots[i].next == deadSlot {
				continue
			}
			if !yield(ix.key(i), ix.slots[i].ie) {
				return
			}
		}
	}
}

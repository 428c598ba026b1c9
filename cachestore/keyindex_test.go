package cachestore

import (
	"context"
	"fmt"
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Hash masks that make distinct keys collide.
const (
	collideAll  = 0 // one chain
	collideFour = 3 // four chains
)

// withIndexMask makes every shard of s keep only the hash bits in mask.
// Call it before anything is indexed.
func withIndexMask(s *Store, mask uint32) {
	for i := range s.shards {
		s.shards[i].entries.mask = mask
	}
}

func indexTestEntry(i int) indexEntry {
	return newIndexEntry(200+i%300, time.Unix(int64(i), int64(i)), int64(i), int64(i)+100, i%2 == 0)
}

func ikOf(i int) string { return string(packKey(nil, Key{1 + i%3, 1, fmt.Sprintf("/k/%d", i)})) }

// checkIndex compares ix with want through every read method and checks
// its bookkeeping.
func checkIndex(t *testing.T, ix *keyIndex, want map[string]indexEntry) {
	t.Helper()
	if ix.len() != len(want) {
		t.Fatalf("len = %d, want %d", ix.len(), len(want))
	}
	got := maps.Collect(ix.all())
	if !maps.Equal(got, want) {
		t.Fatalf("all yields %d keys, want %d (or entries differ)", len(got), len(want))
	}
	for ik, ie := range want {
		if g, ok := ix.get(ik); !ok || g != ie {
			t.Fatalf("get(%q) = %v, %v; want %v, true", ik, g, ok, ie)
		}
	}
	if ix.live+ix.dead != len(ix.slots) {
		t.Fatalf("live %d + dead %d != %d slots", ix.live, ix.dead, len(ix.slots))
	}
	keyBytes := 0
	for ik := range want {
		keyBytes += len(ik)
	}
	if len(ix.arena)-ix.deadBytes != keyBytes {
		t.Fatalf("arena holds %d live bytes, want %d", len(ix.arena)-ix.deadBytes, keyBytes)
	}
	// Compaction keeps the garbage bounded.
	if ix.dead >= compactMin && ix.dead > ix.live {
		t.Fatalf("%d dead slots for %d live ones not compacted", ix.dead, ix.live)
	}
}

// TestKeyIndexModel runs random operations against a keyIndex and a plain
// map, with hash masks that make distinct keys collide.
func TestKeyIndexModel(t *testing.T) {
	seed := maphash.MakeSeed()
	hashes := []struct {
		name string
		mask uint32
	}{
		{"maphash", ^uint32(0)},
		{"all collide", collideAll},
		{"four chains", collideFour},
	}
	for _, hc := range hashes {
		t.Run(hc.name, func(t *testing.T) {
			ix := newKeyIndex(seed)
			ix.mask = hc.mask
			want := map[string]indexEntry{}
			rng := rand.New(rand.NewPCG(1, 2))
			const keys = 300
			for op := range 20_000 {
				i := rng.IntN(keys)
				ik := ikOf(i)
				switch r := rng.IntN(10); {
				case r < 5:
					ie := indexTestEntry(op)
					old, replaced := ix.set(ik, ie)
					if w, ok := want[ik]; ok != replaced || old != w {
						t.Fatalf("op %d: set(%q) = %v, %v; want %v, %v", op, ik, old, replaced, w, ok)
					}
					want[ik] = ie
				default:
					old, ok := ix.del(ik)
					if w, wok := want[ik]; ok != wok || old != w {
						t.Fatalf("op %d: del(%q) = %v, %v; want %v, %v", op, ik, old, ok, w, wok)
					}
					delete(want, ik)
				}
				if op%500 == 0 {
					checkIndex(t, &ix, want)
				}
			}
			checkIndex(t, &ix, want)
			for ik := range want {
				ix.del(ik)
			}
			checkIndex(t, &ix, map[string]indexEntry{})
		})
	}
}

func TestKeyIndexCollisions(t *testing.T) {
	ix := newKeyIndex(maphash.MakeSeed())
	ix.mask = collideAll
	a, b, c := ikOf(1), ikOf(2), ikOf(3)
	for i, ik := range []string{a, b, c} {
		ix.set(ik, indexTestEntry(i))
	}
	if len(ix.heads) != 1 {
		t.Fatalf("%d chains, want 1", len(ix.heads))
	}
	// Remove the middle of the chain, then its head, then its tail.
	for _, tc := range []struct {
		del  string
		want map[string]indexEntry
	}{
		{b, map[string]indexEntry{a: indexTestEntry(0), c: indexTestEntry(2)}},
		{c, map[string]indexEntry{a: indexTestEntry(0)}},
		{a, map[string]indexEntry{}},
	} {
		if _, ok := ix.del(tc.del); !ok {
			t.Fatalf("del(%q) found nothing", tc.del)
		}
		if _, ok := ix.del(tc.del); ok {
			t.Fatalf("second del(%q) found it", tc.del)
		}
		checkIndex(t, &ix, tc.want)
	}
	if len(ix.heads) != 0 {
		t.Errorf("%d chains left in an empty index", len(ix.heads))
	}
	// A key that collides with indexed ones but is not indexed is a miss.
	ix.set(a, indexTestEntry(0))
	if _, ok := ix.get(b); ok {
		t.Error("get of a colliding, unindexed key hit")
	}
}

func TestKeyIndexCompaction(t *testing.T) {
	ix := newKeyIndex(maphash.MakeSeed())
	const n = 1000
	want := map[string]indexEntry{}
	for i := range n {
		ix.set(ikOf(i), indexTestEntry(i))
		want[ikOf(i)] = indexTestEntry(i)
	}
	// Strings handed out before a compaction must not change after it.
	before := map[string]string{}
	for ik := range ix.all() {
		before[strings.Clone(ik)] = ik
	}
	arena := len(ix.arena)
	for i := range n - 10 {
		ix.del(ikOf(i))
		delete(want, ikOf(i))
	}
	checkIndex(t, &ix, want)
	if len(ix.slots) >= n/2 || len(ix.arena) >= arena/2 {
		t.Errorf("after deleting %d of %d keys: %d slots, %d arena bytes (of %d): not compacted", n-10, n, len(ix.slots), len(ix.arena), arena)
	}
	for clone, ik := range before {
		if ik != clone {
			t.Fatalf("key string changed by compaction: %q, was %q", ik, clone)
		}
	}

	// Churn at a steady size reuses the space instead of growing.
	for round := range 50 {
		for i := range 500 {
			k := ikOf(n + round*500 + i)
			ix.set(k, indexTestEntry(i))
			want[k] = indexTestEntry(i)
		}
		for i := range 500 {
			k := ikOf(n + round*500 + i)
			ix.del(k)
			delete(want, k)
		}
	}
	checkIndex(t, &ix, want)
	if len(ix.slots) > 2*len(want)+compactMin+500 {
		t.Errorf("after churn: %d slots for %d keys", len(ix.slots), len(want))
	}
}

// TestStoreHashCollisions runs the Store's index operations with every key
// of a shard on one hash chain.
func TestStoreHashCollisions(t *testing.T) {
	for _, hc := range []struct {
		name string
		mask uint32
	}{{"all collide", collideAll}, {"four chains", collideFour}} {
		t.Run(hc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, func(o *Options) { o.MaxDiskBytes = 1 << 40 })
			withIndexMask(s, hc.mask)
			runStore(t, s)
			waitReady(t, s)
			const n = 60
			for i := range n {
				mustPut(t, s, evictEntry(i))
			}
			mustPut(t, s, evictEntry(5)) // an overwrite is not a new key
			wantDisk := n * evictFileSize()
			if st := s.Stats(); st.Entries != n || st.DiskBytes != wantDisk {
				t.Fatalf("Stats = %d entries, %d disk bytes; want %d, %d", st.Entries, st.DiskBytes, n, wantDisk)
			}
			seen := map[Key]bool{}
			s.Range(func(m Meta) bool { seen[m.Key] = true; return true })
			for i := range n {
				if !seen[evictKey(i)] {
					t.Fatalf("Range missed %v", evictKey(i))
				}
				if _, ok := s.Get(evictKey(i)); !ok {
					t.Fatalf("Get(%v) missed", evictKey(i))
				}
			}

			if !s.Delete(evictKey(7)) || s.Delete(evictKey(7)) {
				t.Fatal("Delete: want true, then false")
			}
			if got := s.DeleteFunc(func(k Key) bool { return k.HostID == 2 }); got != 19 { // 20, less key 7
				t.Fatalf("DeleteFunc removed %d, want 19", got)
			}
			// Keys 0-9 minus 7 and those on host 2 (1, 4) are older than key 10.
			if got := s.DeleteRenderedBefore(evictEntry(10).RenderedAt); got != 7 {
				t.Fatalf("DeleteRenderedBefore removed %d, want 7", got)
			}
			// Evict the 5 oldest remaining entries (of hosts 1 and 3, from 10 on).
			left := s.Stats().Entries
			n2, bytes := s.evictTo(context.Background(), int64(left-5)*evictFileSize())
			if n2 != 5 || bytes != 5*evictFileSize() {
				t.Fatalf("evictTo removed %d entries, %d bytes; want 5, %d", n2, bytes, 5*evictFileSize())
			}
			var want []int
			for i := 10; i < n; i++ {
				if evictKey(i).HostID != 2 {
					want = append(want, i)
				}
			}
			gone := map[int]bool{}
			for _, i := range want[:5] {
				gone[i] = true
			}
			for i := range n {
				_, ok := s.Get(evictKey(i))
				wantOK := i >= 10 && evictKey(i).HostID != 2 && !gone[i]
				if ok != wantOK {
					t.Errorf("Get(%v) ok = %v, want %v", evictKey(i), ok, wantOK)
				}
			}
			if st := s.Stats(); st.Entries != len(want)-5 || st.DiskBytes != int64(len(want)-5)*evictFileSize() {
				t.Errorf("Stats = %d entries, %d disk bytes; want %d, %d", st.Entries, st.DiskBytes,
					len(want)-5, int64(len(want)-5)*evictFileSize())
			}

			// The rebuild indexes the files left, colliding as well. The
			// running store's removal worker deletes the removed entries'
			// files in the background: wait for them to be gone.
			waitFor(t, "removed entries' files gone", func() bool {
				for i := range n {
					kept := i >= 10 && evictKey(i).HostID != 2 && !gone[i]
					if !kept && fileExists(entryPath(dir, evictKey(i))) {
						return false
					}
				}
				return true
			})
			r := openStore(t, dir)
			withIndexMask(r, hc.mask)
			runStore(t, r)
			waitReady(t, r)
			if st := r.Stats(); st.Entries != len(want)-5 {
				t.Errorf("after rebuild: %d entries, want %d", st.Entries, len(want)-5)
			}
		})
	}
}

// TestStoreIndexCompaction deletes enough keys per shard that deleteWhere
// compacts shards while it removes, and checks what is left.
func TestStoreIndexCompaction(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.MemoryBytes = 64 << 20 })
	const n = 60_000
	keys := fillMemory(s, n)
	if got := s.DeleteFunc(func(k Key) bool { return k.HostID != 2 }); got != 2*n/3 {
		t.Fatalf("DeleteFunc removed %d, want %d", got, 2*n/3)
	}
	compacted := 0
	for i := range s.shards {
		if len(s.shards[i].entries.slots) < n/len(s.shards)/2 {
			compacted++
		}
	}
	if compacted == 0 {
		t.Error("no shard compacted")
	}
	left := map[Key]bool{}
	s.Range(func(m Meta) bool { left[m.Key] = true; return true })
	for _, k := range keys {
		if left[k] != (k.HostID == 2) {
			t.Fatalf("after DeleteFunc, Range has %v: %v", k, left[k])
		}
	}
	if got := s.Stats().Entries; got != n/3 {
		t.Errorf("Entries = %d, want %d", got, n/3)
	}
	if got := s.DeleteAll(); got != n/3 {
		t.Errorf("DeleteAll removed %d, want %d", got, n/3)
	}
	for i := range s.shards {
		if ix := &s.shards[i].entries; ix.len() != 0 || len(ix.slots) > compactMin {
			t.Fatalf("shard %d after DeleteAll: %d keys, %d slots", i, ix.len(), len(ix.slots))
		}
	}
}

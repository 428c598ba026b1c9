package cachestore

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fillMemory puts n entries straight into the memory tier and the index,
// bypassing the disk (which would make large n take minutes of fsyncs).
func fillMemory(s *Store, n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		e := &Entry{
			Key:    Key{HostID: 1 + i%3, DimensionID: 1, URL: "/bench/" + strconv.Itoa(i)},
			Status: 200,
			Body:   []byte("small gzip body"),
			ETag:   `"0123456789abcdef"`,
		}
		keys[i] = e.Key
		h := hashKey(s.seed, e.Key)
		sh := s.shardFor(h)
		sh.mu.Lock()
		s.setLocked(sh, string(packKey(nil, e.Key)), newIndexEntry(e.Status, time.Time{}, int64(len(e.Body)), 0, false))
		sh.mu.Unlock()
		for !s.mem.Set(h, e, entryCost(e, 0)) {
			s.mem.Wait() // the set buffer was full
		}
	}
	s.mem.Wait()
	return keys
}

func BenchmarkGetMemory(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := openStore(b, "", func(o *Options) { o.MemoryBytes = 1 << 30 })
			keys := fillMemory(s, n)
			for _, k := range keys[:100] {
				if _, ok := s.Get(k); !ok {
					b.Skip("entry not admitted to the memory tier")
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i = (i + 7919) % len(keys)
					if _, ok := s.Get(keys[i]); !ok {
						// Possible only if ristretto refused an entry.
						continue
					}
				}
			})
		})
	}
}

func BenchmarkGetDisk(b *testing.B) {
	dir := b.TempDir()
	w := openStore(b, dir)
	const n = 200
	keys := make([]Key, n)
	for i := range keys {
		e := testEntry(i)
		e.Body = []byte(strings.Repeat("x", 8<<10))
		keys[i] = e.Key
		mustPut(b, w, e)
	}
	// MemoryBytes 1: every promotion is refused, so each Get reads the disk.
	s := openStore(b, dir, func(o *Options) { o.MemoryBytes = 1 })
	runStore(b, s)
	waitReady(b, s)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok := s.Get(keys[i%n]); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkPut(b *testing.B) {
	s := openStore(b, "")
	body := []byte(strings.Repeat("x", 8<<10))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; b.Loop(); i++ {
		e := testEntry(i)
		e.Body = body
		mustPut(b, s, e)
	}
}

func BenchmarkDeleteFunc(b *testing.B) {
	const n = 100_000
	b.Run("scan-no-match", func(b *testing.B) {
		s := openStore(b, "", func(o *Options) { o.MemoryBytes = 1 << 30 })
		fillMemory(s, n)
		b.ReportAllocs()
		for b.Loop() {
			if got := s.DeleteFunc(func(k Key) bool { return k.HostID == 99 }); got != 0 {
				b.Fatal(got)
			}
		}
	})
	b.Run("remove-all-10k", func(b *testing.B) {
		const n = 10_000
		s := openStore(b, "", func(o *Options) { o.MemoryBytes = 1 << 30 })
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			fillMemory(s, n)
			b.StartTimer()
			if got := s.DeleteAll(); got != n {
				b.Fatalf("DeleteAll = %d", got)
			}
			b.StopTimer()
			s.drainRemovals(b.Context())
			b.StartTimer()
		}
	})
}

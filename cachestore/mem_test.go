package cachestore

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

// memKey is the bench suite's key shape (bench/cmd/populate): 20 categories.
func memKey(i int) Key {
	return Key{HostID: 1, DimensionID: 1, URL: "/c" + strconv.Itoa(10+i%20) + "/item-" + strconv.Itoa(1_000_000+i)}
}

// memEntry is a freshly allocated entry like the one a disk read returns.
func memEntry(i int) *Entry {
	return &Entry{
		Key:        memKey(i),
		Status:     200,
		Header:     http.Header{"Content-Type": {"text/html; charset=utf-8"}},
		Body:       make([]byte, 635),
		RenderedAt: time.Unix(1_780_000_000, int64(i)),
		ETag:       `"0123456789abcdef"`,
	}
}

// fillLikePut leaves in s what n Puts (disk writes succeeding) leave in
// memory: index entries, tombstones cleared, memory-tier copies, without the
// disk I/O (1M fsyncs take minutes).
func fillLikePut(s *Store, n int) {
	for i := range n {
		e := memEntry(i)
		h := hashKey(s.seed, e.Key)
		sh := s.shardFor(h)
		sh.mu.Lock()
		s.putLocked(sh, h, e, int64(len(e.Body))+200, true)
		sh.mu.Unlock()
		if i%64 == 63 {
			s.mem.Wait() // Put waits after each Set; batching keeps 1M fast
		}
	}
	s.mem.Wait()
}

// fillLikeRead leaves in s what the rebuild and then a disk read of each of
// n keys leave: index entries and memory-tier copies decoded from file bytes
// (getDisk's promotion, without the file I/O).
func fillLikeRead(s *Store, n int) {
	for i := range n {
		b := encodeEntry(memEntry(i))
		e, err := decodeEntry(b, s.maxBody)
		if err != nil {
			panic(err)
		}
		h := hashKey(s.seed, e.Key)
		sh := s.shardFor(h)
		sh.mu.Lock()
		s.setLocked(sh, string(packKey(nil, e.Key)), newIndexEntry(e.Status, e.RenderedAt, int64(len(e.Body)), int64(len(b)), true))
		s.mem.Set(h, e, entryCost(e, int64(len(b))))
		sh.mu.Unlock()
		if i%64 == 63 {
			s.mem.Wait()
		}
	}
	s.mem.Wait()
}

// fillLikeRebuild leaves in s what the index rebuild leaves for n files:
// index entries only (the memory tier fills later, from reads).
func fillLikeRebuild(s *Store, n int) {
	for i := range n {
		e := memEntry(i)
		h := hashKey(s.seed, e.Key)
		sh := s.shardFor(h)
		sh.mu.Lock()
		s.setLocked(sh, string(packKey(nil, e.Key)), newIndexEntry(e.Status, e.RenderedAt, int64(len(e.Body)), int64(len(e.Body))+200, true))
		sh.mu.Unlock()
	}
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestIndexMemory reports the heap the store holds per key, the way the
// bench suite's growth runs fill it (memory_mb = 64). Run with
//
//	PRISM_MEM=1 go test -run TestIndexMemory -v ./cachestore/
//
// PRISM_MEM_N overrides the sizes (comma-separated); PRISM_MEM_PROFILE=path
// writes a heap profile per case to path.<case>-<n> (use with
// -memprofilerate=4096 for detail).
func TestIndexMemory(t *testing.T) {
	if os.Getenv("PRISM_MEM") == "" {
		t.Skip("set PRISM_MEM=1 to measure")
	}
	sizes := []int{100_000, 1_000_000}
	if v := os.Getenv("PRISM_MEM_N"); v != "" {
		sizes = nil
		for _, f := range splitComma(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	fills := []struct {
		name string
		fill func(*Store, int)
	}{
		{"put", fillLikePut},
		{"read", fillLikeRead},
		{"rebuild", fillLikeRebuild},
	}
	for _, f := range fills {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/n=%d", f.name, n), func(t *testing.T) {
				before := heapInuse()
				s := openStore(t, "", func(o *Options) { o.MemoryBytes = 64 << 20 })
				f.fill(s, n)
				after := heapInuse()
				st := s.Stats()
				if st.Entries != n {
					t.Fatalf("Entries = %d, want %d", st.Entries, n)
				}
				total := float64(after - before)
				t.Logf("%s n=%d: heap %.1f MB, %.0f B/key; memory tier accounts %.1f MB; %.0f B/key beyond it",
					f.name, n, total/1e6, total/float64(n), float64(st.MemoryBytes)/1e6,
					(total-float64(st.MemoryBytes))/float64(n))
				if p := os.Getenv("PRISM_MEM_PROFILE"); p != "" {
					writeHeapProfile(t, fmt.Sprintf("%s.%s-%d", p, f.name, n))
				}
				runtime.KeepAlive(s)
			})
		}
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// TestPurgeCost reports what DeleteFunc costs per removed key over a large
// index (files absent, so the removal worker's os.Remove is cheap), with Run
// going as in PRISM. Run with PRISM_MEM=1 (PRISM_MEM_N: the index size).
func TestPurgeCost(t *testing.T) {
	if os.Getenv("PRISM_MEM") == "" {
		t.Skip("set PRISM_MEM=1 to measure")
	}
	n := 1_000_000
	if v := os.Getenv("PRISM_MEM_N"); v != "" {
		n, _ = strconv.Atoi(splitComma(v)[len(splitComma(v))-1])
	}
	s := openStore(t, "", func(o *Options) { o.MemoryBytes = 64 << 20 })
	runStore(t, s)
	waitReady(t, s)
	fillLikePut(s, n)
	if os.Getenv("PRISM_MEM_FILES") != "" {
		// Real files for the removal worker (no fsync: this measures purge).
		for i := range n {
			e := memEntry(i)
			path := entryPath(s.dir, e.Key)
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, encodeEntry(e), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	prefix := func(p string) func(Key) bool {
		return func(k Key) bool { return len(k.URL) >= len(p) && k.URL[:len(p)] == p }
	}
	for _, tc := range []struct {
		name    string
		pattern string
	}{
		{"5%", "/c17/"},
		{"none", "/nothing/"},
		{"5%-again", "/c18/"},
	} {
		start := time.Now()
		got := s.DeleteFunc(prefix(tc.pattern))
		el := time.Since(start)
		per := time.Duration(0)
		if got > 0 {
			per = el / time.Duration(got)
		}
		t.Logf("DeleteFunc %s over %d keys: removed %d in %v (%v per removed key)", tc.name, s.Stats().Entries+got, got, el.Round(time.Millisecond), per)
	}
}

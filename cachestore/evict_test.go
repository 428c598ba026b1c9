package cachestore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/metricdoc"
)

var evictEpoch = time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)

// evictKey keys have the same length, so evictEntry files have the same size.
func evictKey(i int) Key { return Key{HostID: 1 + i%3, DimensionID: 1, URL: fmt.Sprintf("/e/%04d", i)} }

// evictEntry is entry i, rendered i seconds after evictEpoch, with a
// 1000-byte body.
func evictEntry(i int) *Entry {
	body := bytes.Repeat([]byte{'a' + byte(i%26)}, 1000)
	copy(body, evictKey(i).String())
	return &Entry{
		Key:        evictKey(i),
		Status:     200,
		Header:     map[string][]string{"Content-Type": {"text/html"}},
		Body:       body,
		RenderedAt: evictEpoch.Add(time.Duration(i) * time.Second),
		ETag:       etagOf(body),
	}
}

// evictFileSize is the size of every evictEntry's file.
func evictFileSize() int64 { return int64(len(encodeEntry(evictEntry(0)))) }

// syncBuffer is a log sink Run's goroutine may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// inMemory reports whether the memory tier holds k.
func inMemory(s *Store, k Key) bool {
	e, ok := s.mem.Get(hashKey(s.seed, k))
	return ok && e != nil && e.Key == k
}

func TestEvictOldestPastCap(t *testing.T) {
	size := evictFileSize()
	const maxFiles, lowFiles, n = 20, 18, 30
	dir := t.TempDir()
	set := metricdoc.NewSet()
	var logs syncBuffer
	s := openStore(t, dir, func(o *Options) {
		o.MaxDiskBytes = maxFiles * size
		o.Metrics = set
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})

	// Put in an order unrelated to the render order: eviction goes by
	// RenderedAt, not by when an entry was stored.
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		mustPut(t, s, evictEntry(i))
	}
	// Put never evicts: without Run everything stays.
	if st := s.Stats(); st.Entries != n || st.DiskBytes != n*size || st.Evictions != 0 {
		t.Fatalf("Stats after Puts past the bound, before Run = %+v, want %d entries, %d bytes", st, n, n*size)
	}

	runStore(t, s)
	waitFor(t, "an eviction pass", func() bool { return s.Stats().Evictions > 0 })
	st := s.Stats()
	if st.Evictions != n-lowFiles || st.Entries != lowFiles || st.DiskBytes > s.lowWater() {
		t.Errorf("Stats after the pass = %+v, want %d evictions, %d entries, at most %d bytes",
			st, n-lowFiles, lowFiles, s.lowWater())
	}
	for i := range n {
		k := evictKey(i)
		got, ok := s.Get(k)
		if i < n-lowFiles {
			if ok {
				t.Errorf("entry %d (among the oldest) still served", i)
			}
			if inMemory(s, k) {
				t.Errorf("entry %d evicted but still in memory", i)
			}
			continue
		}
		if !ok {
			t.Errorf("entry %d (among the newest) evicted", i)
			continue
		}
		sameEntry(t, got, evictEntry(i))
	}
	waitFilesRemoved(t, dir, n-lowFiles, evictKey)
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for _, want := range []string{
		fmt.Sprintf("prism_cache_disk_evictions_total %d\n", n-lowFiles),
		fmt.Sprintf("prism_cache_disk_evicted_bytes_total %d\n", (n-lowFiles)*size),
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
	if l := logs.String(); !strings.Contains(l, "evicted the oldest entries") ||
		!strings.Contains(l, fmt.Sprintf("count=%d bytes=%d", n-lowFiles, (n-lowFiles)*size)) {
		t.Errorf("no eviction log line with count and bytes:\n%s", l)
	}

	// With Run going, newer Puts past the bound evict the oldest again, and
	// a render in flight is still stored: eviction is not a purge.
	gen := s.Generation(evictKey(n + 10))
	const more = 5
	for i := n; i < n+more; i++ {
		mustPut(t, s, evictEntry(i))
	}
	waitFor(t, "a second pass", func() bool { return s.Stats().Evictions > n-lowFiles })
	waitFor(t, "the disk tier under its bound", func() bool { return s.Stats().DiskBytes <= maxFiles*size })
	// The survivors are the newest entries, whatever the passes' timing:
	// at least the 3 past the bound went.
	oldest := -1
	for i := range n + more {
		_, ok := s.Get(evictKey(i))
		switch {
		case ok && oldest < 0:
			oldest = i
		case !ok && oldest >= 0:
			t.Errorf("entry %d evicted while the older entry %d survives", i, oldest)
		}
	}
	if want := n - lowFiles + more - (maxFiles - lowFiles); oldest < want {
		t.Errorf("oldest survivor %d, want at least %d", oldest, want)
	}
	if err := s.PutIf(evictEntry(n+10), gen); err != nil {
		t.Errorf("PutIf after an eviction = %v, want nil", err)
	}
}

func TestEvictAfterRestartWithSmallerCap(t *testing.T) {
	size := evictFileSize()
	const n, maxFiles, lowFiles = 30, 10, 9
	dir := t.TempDir()
	old := openStore(t, dir) // no bound, no Run: files only
	for i := range n {
		mustPut(t, old, evictEntry(i))
	}

	s := openStore(t, dir, func(o *Options) { o.MaxDiskBytes = maxFiles * size })
	// Served (and indexed) before the rebuild: eviction counts it too.
	if _, ok := s.Get(evictKey(0)); !ok {
		t.Fatal("Get before the rebuild missed")
	}
	runStore(t, s)
	waitReady(t, s)
	waitFor(t, "an eviction pass", func() bool { return s.Stats().Evictions > 0 })
	if st := s.Stats(); st.Entries != lowFiles || st.DiskBytes > s.lowWater() || st.Evictions != n-lowFiles {
		t.Errorf("Stats after the pass = %+v, want %d entries", st, lowFiles)
	}
	for i := range n {
		got, ok := s.Get(evictKey(i))
		if want := i >= n-lowFiles; ok != want {
			t.Errorf("entry %d: served=%v, want %v", i, ok, want)
		} else if ok {
			sameEntry(t, got, evictEntry(i))
		}
	}
	waitFilesRemoved(t, dir, n-lowFiles, evictKey)

	again := openStore(t, dir)
	runStore(t, again)
	waitReady(t, again)
	if st := again.Stats(); st.Entries != lowFiles || st.DiskBytes != lowFiles*size {
		t.Errorf("Stats after another restart = %+v, want %d entries", st, lowFiles)
	}
}

func TestNoDiskCap(t *testing.T) {
	s := openStore(t, "")
	const n = 50
	for i := range n {
		mustPut(t, s, evictEntry(i))
	}
	runStore(t, s)
	waitReady(t, s)
	if got := s.evict(t.Context()); got != 0 {
		t.Errorf("eviction pass without a bound removed %d", got)
	}
	if st := s.Stats(); st.Entries != n || st.Evictions != 0 {
		t.Errorf("Stats = %+v, want %d entries and no evictions", st, n)
	}
	if _, err := New(Options{Dir: t.TempDir(), MaxDiskBytes: -1}); err == nil {
		t.Error("New with a negative MaxDiskBytes succeeded")
	}
}

// TestEvictConcurrent runs Puts, PutIfs, deletes and reads against a store
// that keeps evicting; at rest the index, the counters and the files on
// disk must agree and the disk tier must be under its bound.
func TestEvictConcurrent(t *testing.T) {
	const keys, maxFiles = 120, 40
	dir := t.TempDir()
	var clock atomic.Int64
	s := openStore(t, dir, func(o *Options) {
		o.MaxDiskBytes = maxFiles * evictFileSize()
		o.MemoryBytes = 64 << 10
		o.Now = func() time.Time { return evictEpoch.Add(time.Duration(clock.Add(1)) * time.Millisecond) }
	})
	runStore(t, s)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for n := range 300 {
				i := r.IntN(keys)
				k := evictKey(i)
				e := evictEntry(i)
				e.RenderedAt = time.Time{} // stamped by the store's clock
				copy(e.Body, fmt.Sprintf("%s|%d|%d|", k.String(), w, n))
				e.Body = e.Body[:500+r.IntN(500)] // sizes vary: the byte counts must follow each entry
				e.ETag = ""
				switch op := r.IntN(20); {
				case op < 8:
					if err := s.Put(e); err != nil {
						t.Error(err)
						return
					}
				case op < 10:
					if err := s.PutIf(e, s.Generation(k)); err != nil && !errors.Is(err, ErrPurged) {
						t.Error(err)
						return
					}
				case op == 10:
					s.Delete(k)
				case op == 11 && n%60 == 0:
					s.DeleteFunc(func(k Key) bool { return k.HostID == 1+w%3 })
				default:
					if got, ok := s.Get(k); ok && (got.Key != k || !strings.HasPrefix(string(got.Body), k.String()+"|")) {
						t.Errorf("Get(%v) returned %v / %.20q", k, got.Key, got.Body)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if s.Stats().Evictions == 0 {
		t.Fatal("no eviction: the test did not fill the disk tier")
	}
	waitFor(t, "the disk tier under its bound", func() bool { return s.Stats().DiskBytes <= s.maxDisk })

	var indexed int64
	s.Range(func(m Meta) bool {
		indexed++
		if _, ok := s.Get(m.Key); !ok {
			t.Errorf("indexed %v but Get misses", m.Key)
		}
		return true
	})
	// The index's byte count is checked against the files themselves: with
	// concurrent Puts of one key, the memory tier may hold another of them
	// than the one on disk, so re-encoding what Get returns is no measure.
	st := s.Stats()
	if int64(st.Entries) != indexed {
		t.Errorf("Stats = %+v; Range saw %d entries", st, indexed)
	}
	indexedBytes := st.DiskBytes
	// Once the removal worker is done, the files are exactly the index.
	var files, fileBytes int64
	waitFor(t, "files on disk to match the index", func() bool {
		files, fileBytes = 0, 0
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					files++
					fileBytes += info.Size()
				}
			}
			return nil
		})
		return files == indexed && fileBytes == indexedBytes
	})
}

package cachestore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/internal/promcheck"
)

func TestRoundTripMemoryAndDisk(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	runStore(t, s)
	waitReady(t, s)
	want := testEntry(7)
	mustPut(t, s, want)

	got, ok := s.Get(want.Key)
	if !ok {
		t.Fatal("Get after Put: miss")
	}
	if got != want {
		t.Errorf("Get after Put did not come from memory (got a different *Entry)")
	}
	sameEntry(t, got, want)
	if !fileExists(entryPath(dir, want.Key)) {
		t.Fatalf("no file at %s", entryPath(dir, want.Key))
	}
	st := s.Stats()
	if st.Entries != 1 || st.DiskBytes <= int64(len(want.Body)) || st.MemoryBytes <= 0 {
		t.Errorf("Stats = %+v", st)
	}

	// A new Store on the same dir is a restart: the entry comes back from
	// disk before the index rebuild ...
	s2 := openStore(t, dir)
	got, ok = s2.Get(want.Key)
	if !ok {
		t.Fatal("Get after restart, before rebuild: miss")
	}
	sameEntry(t, got, want)
	// ... and is then in memory.
	if again, _ := s2.Get(want.Key); again == nil {
		t.Fatal("second Get missed")
	}

	// And after the rebuild on a third store.
	s3 := openStore(t, dir)
	runStore(t, s3)
	waitReady(t, s3)
	got, ok = s3.Get(want.Key)
	if !ok {
		t.Fatal("Get after restart and rebuild: miss")
	}
	sameEntry(t, got, want)
	if n := s3.Stats().Entries; n != 1 {
		t.Errorf("Entries after rebuild = %d, want 1", n)
	}
	if _, ok := s3.Get(testKey(8)); ok {
		t.Error("Get of a never-stored key hit")
	}
}

func TestPutSetsETagAndTime(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := openStore(t, "", func(o *Options) { o.Now = func() time.Time { return now } })
	a := &Entry{Key: Key{1, 1, "/a"}, Status: 200, Body: []byte("same")}
	b := &Entry{Key: Key{1, 1, "/b"}, Status: 200, Body: []byte("same")}
	c := &Entry{Key: Key{1, 1, "/c"}, Status: 200, Body: []byte("other")}
	d := &Entry{Key: Key{1, 1, "/d"}, Status: 200, Body: []byte("x"), ETag: `"mine"`}
	for _, e := range []*Entry{a, b, c, d} {
		mustPut(t, s, e)
	}
	if len(a.ETag) != 18 || !strings.HasPrefix(a.ETag, `"`) || !strings.HasSuffix(a.ETag, `"`) {
		t.Errorf("ETag = %s, want a quoted 16-hex-digit tag", a.ETag)
	}
	if a.ETag != b.ETag || a.ETag == c.ETag {
		t.Errorf("ETags a=%s b=%s c=%s: same body must give same tag, other body another", a.ETag, b.ETag, c.ETag)
	}
	if d.ETag != `"mine"` {
		t.Errorf("given ETag replaced: %s", d.ETag)
	}
	if !a.RenderedAt.Equal(now) {
		t.Errorf("RenderedAt = %v, want %v", a.RenderedAt, now)
	}
}

func TestPutRejectsInvalid(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.MaxEntryBytes = 100 })
	tests := []struct {
		name string
		e    *Entry
		want error
	}{
		{"nil", nil, ErrInvalidEntry},
		{"no status", &Entry{Key: Key{1, 1, "/"}}, ErrInvalidEntry},
		{"status 1000", &Entry{Key: Key{1, 1, "/"}, Status: 1000}, ErrInvalidEntry},
		{"empty url", &Entry{Status: 200}, ErrInvalidEntry},
		{"long url", &Entry{Key: Key{1, 1, "/" + strings.Repeat("a", maxURLLen)}, Status: 200}, ErrInvalidEntry},
		{"empty header name", &Entry{Key: Key{1, 1, "/"}, Status: 200, Header: http.Header{"": {"x"}}}, ErrInvalidEntry},
		{"big body", &Entry{Key: Key{1, 1, "/"}, Status: 200, Body: make([]byte, 101)}, ErrTooLarge},
		{"big headers", &Entry{Key: Key{1, 1, "/"}, Status: 200, Header: http.Header{"X": {strings.Repeat("v", maxHeaderLen)}}}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Put(tt.e); !errors.Is(err, tt.want) {
				t.Errorf("Put = %v, want %v", err, tt.want)
			}
		})
	}
	if n := s.Stats().Entries; n != 0 {
		t.Errorf("Entries = %d after rejected Puts", n)
	}
}

func TestOverwrite(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	runStore(t, s)
	waitReady(t, s)
	e1 := testEntry(1)
	mustPut(t, s, e1)
	e2 := testEntry(1)
	e2.Body = []byte("newer")
	e2.Status = 404
	mustPut(t, s, e2)
	if got, _ := s.Get(e1.Key); got == nil || string(got.Body) != "newer" {
		t.Fatalf("Get after overwrite = %+v", got)
	}
	if st := s.Stats(); st.Entries != 1 {
		t.Errorf("Entries = %d, want 1", st.Entries)
	}
	s2 := openStore(t, dir)
	runStore(t, s2)
	waitReady(t, s2)
	if got, _ := s2.Get(e1.Key); got == nil || got.Status != 404 {
		t.Fatalf("Get after restart = %+v, want the newer 404", got)
	}
	var metas []Meta
	s2.Range(func(m Meta) bool { metas = append(metas, m); return true })
	if len(metas) != 1 || metas[0].Status != 404 || metas[0].Size != 5 || metas[0].Key != e1.Key {
		t.Errorf("Range = %+v", metas)
	}
}

func TestDelete(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			runStore(t, s)
			waitReady(t, s)
			const n = 30
			for i := range n {
				mustPut(t, s, testEntry(i))
			}
			if restart {
				// Entries now come from disk (memory is empty in the new store).
				s = openStore(t, dir)
				runStore(t, s)
				waitReady(t, s)
			}
			gone := map[Key]bool{}
			if !s.Delete(testKey(0)) {
				t.Error("Delete of a stored key = false")
			}
			gone[testKey(0)] = true
			if s.Delete(testKey(0)) {
				t.Error("second Delete = true")
			}
			if s.Delete(Key{9, 9, "/never"}) {
				t.Error("Delete of an unknown key = true")
			}
			// testKey(i) has HostID 1+i%3: host 2 holds i = 1, 4, ..., 28 (10 keys, none deleted yet).
			if got := s.DeleteFunc(func(k Key) bool { return k.HostID == 2 }); got != 10 {
				t.Errorf("DeleteFunc(host 2) = %d, want 10", got)
			}
			for i := range n {
				if testKey(i).HostID == 2 {
					gone[testKey(i)] = true
				}
			}
			for i := range n {
				_, ok := s.Get(testKey(i))
				if ok == gone[testKey(i)] {
					t.Errorf("Get(%v) hit=%v after deletes", testKey(i), ok)
				}
			}
			if st := s.Stats(); st.Entries != n-11 {
				t.Errorf("Entries = %d, want %d", st.Entries, n-11)
			}
			if got := s.DeleteAll(); got != n-11 {
				t.Errorf("DeleteAll = %d, want %d", got, n-11)
			}
			for i := range n {
				if _, ok := s.Get(testKey(i)); ok {
					t.Errorf("Get(%v) hit after DeleteAll", testKey(i))
				}
			}
			if st := s.Stats(); st.Entries != 0 || st.DiskBytes != 0 || st.MemoryBytes != 0 {
				t.Errorf("Stats after DeleteAll = %+v", st)
			}
			// The removal worker deletes the files in the background.
			waitFilesRemoved(t, dir, n, testKey)
			// And nothing comes back after a restart.
			s2 := openStore(t, dir)
			runStore(t, s2)
			waitReady(t, s2)
			if st := s2.Stats(); st.Entries != 0 {
				t.Errorf("Entries after restart = %d", st.Entries)
			}
		})
	}
}

func TestDeleteThenPutSameKey(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir) // no Run: removals stay queued with their tombstones
	e := testEntry(3)
	mustPut(t, s, e)
	s.Delete(e.Key)
	e2 := testEntry(3)
	e2.Body = []byte("second")
	mustPut(t, s, e2)
	s.drainRemovals(t.Context()) // must not remove the new file
	s2 := openStore(t, dir)
	if got, ok := s2.Get(e.Key); !ok || string(got.Body) != "second" {
		t.Fatalf("after Delete, Put, removal: Get = %v, %v", got, ok)
	}
}

func TestDeletedFileNeverServedBeforeRemoval(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	runStore(t, s)
	waitReady(t, s)
	e := testEntry(4)
	mustPut(t, s, e)
	s2 := openStore(t, dir) // no Run: files are not removed, index not ready
	s2.Delete(e.Key)
	if !fileExists(entryPath(dir, e.Key)) {
		t.Fatal("file removed synchronously; this test needs it to linger")
	}
	if _, ok := s2.Get(e.Key); ok {
		t.Fatal("Get served a deleted entry from its lingering file")
	}
}

func TestMemoryBound(t *testing.T) {
	const bound = 64 << 10
	s := openStore(t, "", func(o *Options) { o.MemoryBytes = bound })
	for i := range 200 {
		e := testEntry(i)
		e.Body = bytes.Repeat([]byte{byte(i)}, 2000)
		mustPut(t, s, e)
		if mb := s.Stats().MemoryBytes; mb > bound {
			t.Fatalf("after %d Puts MemoryBytes = %d > %d", i+1, mb, bound)
		}
	}
	if mb := s.Stats().MemoryBytes; mb < bound/2 {
		t.Errorf("MemoryBytes = %d: memory tier barely used", mb)
	}
	// Everything is still readable from disk.
	for i := range 200 {
		if _, ok := s.Get(testKey(i)); !ok {
			t.Fatalf("Get(%d) missed", i)
		}
	}
}

func TestDiskDegraded(t *testing.T) {
	dir := t.TempDir()
	set := metricdoc.NewSet()
	s := openStore(t, dir, func(o *Options) { o.Metrics = set })
	runStore(t, s)
	waitReady(t, s)
	e := testEntry(1)
	// A regular file where the key's directory must go makes the write fail.
	blocker := filepath.Join(dir, fileName(e.Key)[:2])
	if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(e); err != nil {
		t.Fatalf("Put on a failing disk = %v, want nil (memory-only)", err)
	}
	st := s.Stats()
	if !st.DiskDegraded || st.DiskErrors != 1 || st.Entries != 1 || st.DiskBytes != 0 {
		t.Errorf("Stats after failed write = %+v", st)
	}
	if got, ok := s.Get(e.Key); !ok || got != e {
		t.Fatal("memory-only entry not served")
	}
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), "prism_cache_disk_errors_total 1") ||
		!strings.Contains(buf.String(), "prism_cache_disk_degraded 1") {
		t.Errorf("metrics:\n%s", buf.String())
	}

	os.Remove(blocker)
	mustPut(t, s, testEntry(2))
	if st := s.Stats(); st.DiskDegraded || st.DiskErrors != 1 {
		t.Errorf("Stats after a good write = %+v", st)
	}
	// A purge must still find the memory-only entry.
	if n := s.DeleteFunc(func(k Key) bool { return k == e.Key }); n != 1 {
		t.Errorf("DeleteFunc of memory-only entry = %d", n)
	}
	if _, ok := s.Get(e.Key); ok {
		t.Error("memory-only entry served after delete")
	}
}

func TestMetrics(t *testing.T) {
	set := metricdoc.NewSet()
	s := openStore(t, "", func(o *Options) { o.Metrics = set })
	e := testEntry(1)
	mustPut(t, s, e)
	s.Get(e.Key)
	s.mem.Del(hashKey(s.seed, e.Key))
	s.Get(e.Key)
	s.Get(testKey(2))
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for _, want := range []string{
		`prism_cache_hits_total{tier="memory"} 1`,
		`prism_cache_hits_total{tier="disk"} 1`,
		`prism_cache_misses_total 1`,
		`prism_cache_entries 1`,
		`prism_cache_corrupt_files_total 0`,
		`prism_cache_disk_bytes `,
		`prism_cache_memory_bytes `,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
	if _, problems := promcheck.Check(buf.String()); len(problems) > 0 {
		t.Errorf("metrics not as Prometheus wants them: %v", problems)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	const keys = 40
	// Files from an earlier run, so the rebuild races with the workers.
	prev := openStore(t, dir)
	for i := range keys {
		e := testEntry(i)
		e.Body = []byte(testKey(i).String() + "|old")
		mustPut(t, prev, e)
	}
	s := openStore(t, dir, func(o *Options) { o.MemoryBytes = 32 << 10 })
	runStore(t, s)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := range 150 {
				i := r.IntN(keys)
				k := testKey(i)
				switch op := r.IntN(10); {
				case op < 3:
					e := testEntry(i)
					e.Body = []byte(fmt.Sprintf("%s|%d|%d", k.String(), w, n))
					if err := s.Put(e); err != nil {
						t.Error(err)
						return
					}
				case op < 4:
					s.Delete(k)
				case op == 4 && n%50 == 0:
					s.DeleteFunc(func(k Key) bool { return k.HostID == 1+w%3 })
				default:
					if e, ok := s.Get(k); ok && (e.Key != k || !strings.HasPrefix(string(e.Body), k.String()+"|")) {
						t.Errorf("Get(%v) returned %v / %q", k, e.Key, e.Body)
						return
					}
				}
			}
			s.Range(func(Meta) bool { return true })
			s.Stats()
		}()
	}
	wg.Wait()
	waitReady(t, s)
	// The index agrees with itself and with the store.
	n := 0
	s.Range(func(m Meta) bool {
		n++
		if _, ok := s.Get(m.Key); !ok {
			t.Errorf("indexed %v but Get misses", m.Key)
		}
		return true
	})
	if st := s.Stats(); st.Entries != n {
		t.Errorf("Stats.Entries = %d, Range saw %d", st.Entries, n)
	}
	for i := range keys {
		_, ok := s.Get(testKey(i))
		found := false
		s.Range(func(m Meta) bool { found = found || m.Key == testKey(i); return !found })
		if ok != found {
			t.Errorf("key %d: Get hit=%v, indexed=%v", i, ok, found)
		}
	}
}

func TestRunTwice(t *testing.T) {
	s := openStore(t, "")
	runStore(t, s)
	waitFor(t, "running", func() bool { return s.running.Load() })
	if err := s.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestNewNeedsDir(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without Dir succeeded")
	}
}

// TestDeleteRacesPromotion deletes a key while other goroutines keep reading
// it from disk (promoting it to memory): once Delete returns, Get must miss.
func TestDeleteRacesPromotion(t *testing.T) {
	s := openStore(t, "")
	runStore(t, s)
	waitReady(t, s)
	k := testKey(1)
	for round := range 30 {
		mustPut(t, s, testEntry(1))
		s.mem.Del(hashKey(s.seed, k)) // force the next Gets to the disk path
		s.mem.Wait()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						s.Get(k)
					}
				}
			}()
		}
		if !s.Delete(k) {
			t.Fatalf("round %d: Delete = false", round)
		}
		for range 200 {
			if _, ok := s.Get(k); ok {
				t.Fatalf("round %d: Get hit after Delete returned", round)
			}
		}
		close(stop)
		wg.Wait()
		if _, ok := s.Get(k); ok {
			t.Fatalf("round %d: Get hit after Delete returned", round)
		}
	}
}

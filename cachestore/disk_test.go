package cachestore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storedFile puts e into a fresh store on dir and returns its file's bytes.
func storedFile(t *testing.T, dir string, e *Entry) []byte {
	t.Helper()
	s := openStore(t, dir)
	mustPut(t, s, e)
	b, err := os.ReadFile(entryPath(dir, e.Key))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptFilesAreMissesAndRemoved(t *testing.T) {
	e := testEntry(11)
	good := storedFile(t, t.TempDir(), e)
	other := storedFile(t, t.TempDir(), testEntry(12))
	n := len(good)
	mutations := map[string]func(b []byte, other []byte) []byte{
		"zero length":       func(b, _ []byte) []byte { return nil },
		"truncated to 1":    func(b, _ []byte) []byte { return b[:1] },
		"truncated to 20":   func(b, _ []byte) []byte { return b[:20] },
		"truncated in head": func(b, _ []byte) []byte { return b[:fixedLen+3] },
		"truncated to half": func(b, _ []byte) []byte { return b[:n/2] },
		"truncated by one":  func(b, _ []byte) []byte { return b[:n-1] },
		"one byte appended": func(b, _ []byte) []byte { return append(b, 0) },
		"flipped magic":     func(b, _ []byte) []byte { b[0] ^= 0xff; return b },
		"flipped status":    func(b, _ []byte) []byte { b[6] ^= 0x01; return b },
		"flipped url byte":  func(b, _ []byte) []byte { b[fixedLen+2] ^= 0x20; return b },
		"flipped header":    func(b, _ []byte) []byte { b[n-30] ^= 0x01; return b },
		"flipped body byte": func(b, _ []byte) []byte { b[n-6] ^= 0x80; return b },
		"flipped checksum":  func(b, _ []byte) []byte { b[n-1] ^= 0x01; return b },
		"garbage":           func(b, _ []byte) []byte { return bytes.Repeat([]byte("garbage!"), 40) },
		"other key's file":  func(_, other []byte) []byte { return other },
		"huge body length": func(b, _ []byte) []byte {
			copy(b[48:56], []byte{0, 0, 0, 0, 0, 0, 0, 0x10})
			return b
		},
	}
	for name, mutate := range mutations {
		for _, mode := range []string{"get-before-rebuild", "rebuild-then-get"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				dir := t.TempDir()
				path := entryPath(dir, e.Key)
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, mutate(bytes.Clone(good), other), 0o644); err != nil {
					t.Fatal(err)
				}
				s := openStore(t, dir)
				if mode == "rebuild-then-get" {
					runStore(t, s)
					waitReady(t, s)
				}
				if got, ok := s.Get(e.Key); ok {
					t.Fatalf("corrupt file served: %+v", got)
				}
				if fileExists(path) {
					t.Error("corrupt file not removed")
				}
				if st := s.Stats(); st.Entries != 0 || st.DiskBytes != 0 {
					t.Errorf("Stats = %+v", st)
				}
			})
		}
	}
}

func TestEverySingleByteFlipAndTruncationRejected(t *testing.T) {
	good := encodeEntry(testEntry(13))
	if _, err := decodeEntry(good, 1<<20); err != nil {
		t.Fatalf("good file rejected: %v", err)
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x5a
		if _, err := decodeEntry(b, 1<<20); !errors.Is(err, errCorrupt) {
			t.Fatalf("flip at %d: err = %v", i, err)
		}
		if _, err := decodeEntry(good[:i], 1<<20); !errors.Is(err, errCorrupt) {
			t.Fatalf("truncation to %d: err = %v", i, err)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []*Entry{
		testEntry(0),
		testEntry(1),
		{Key: Key{-1, 0, "/"}, Status: 301, Header: http0(), Body: nil},
		{Key: Key{1 << 40, 7, "/ü?x=1&y"}, Status: 999, Header: map[string][]string{"A": {}, "B": {""}}, Body: []byte{0}},
	}
	for _, e := range tests {
		t.Run(e.Key.String(), func(t *testing.T) {
			b := encodeEntry(e)
			got, err := decodeEntry(b, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			sameEntry(t, got, e)
			if !bytes.Equal(encodeEntry(got), b) {
				t.Error("re-encoding differs")
			}
		})
	}
}

func http0() map[string][]string { return nil }

func TestTempLeftoversRemoved(t *testing.T) {
	dir := t.TempDir()
	e := testEntry(5)
	storedFile(t, dir, e)
	path := entryPath(dir, e.Key)
	stale := path + ".tmp-0123456789ab-1"
	if err := os.WriteFile(stale, []byte("half a write"), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(filepath.Dir(path), "README")
	os.WriteFile(foreign, []byte("not ours"), 0o644)
	s := openStore(t, dir)
	runStore(t, s)
	waitReady(t, s)
	if fileExists(stale) {
		t.Error("temp file left over from a crash not removed")
	}
	if !fileExists(foreign) {
		t.Error("unknown file removed")
	}
	if _, ok := s.Get(e.Key); !ok || s.Stats().Entries != 1 {
		t.Error("entry next to the temp file lost")
	}
}

func TestRebuildCounts(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	const n = 60
	var bodyBytes int64
	for i := range n {
		e := testEntry(i)
		mustPut(t, s, e)
		bodyBytes += int64(len(e.Body))
	}
	want := s.Stats()
	// A corrupt file and a misplaced (renamed) file are not indexed.
	os.WriteFile(entryPath(dir, Key{5, 5, "/corrupt"}), nil, 0o644)
	good, _ := os.ReadFile(entryPath(dir, testKey(0)))
	misplaced := entryPath(dir, Key{5, 5, "/misplaced"})
	os.MkdirAll(filepath.Dir(misplaced), 0o755)
	os.WriteFile(misplaced, good, 0o644)

	s2 := openStore(t, dir)
	if s2.Stats().IndexReady {
		t.Fatal("IndexReady before Run")
	}
	runStore(t, s2)
	waitReady(t, s2)
	got := s2.Stats()
	if got.Entries != n || got.DiskBytes != want.DiskBytes {
		t.Errorf("after rebuild Stats = %+v, want Entries %d DiskBytes %d", got, n, want.DiskBytes)
	}
	var sum int64
	seen := map[Key]bool{}
	s2.Range(func(m Meta) bool {
		sum += m.Size
		seen[m.Key] = true
		if m.Status != 200 || m.RenderedAt.IsZero() {
			t.Errorf("Meta = %+v", m)
		}
		return true
	})
	if sum != bodyBytes || len(seen) != n {
		t.Errorf("Range: %d keys, %d body bytes; want %d, %d", len(seen), sum, n, bodyBytes)
	}
	if fileExists(misplaced) || fileExists(entryPath(dir, Key{5, 5, "/corrupt"})) {
		t.Error("corrupt or misplaced file survived the rebuild")
	}
	stop := 0
	s2.Range(func(Meta) bool { stop++; return stop < 3 })
	if stop != 3 {
		t.Errorf("Range did not stop: %d calls", stop)
	}
}

func TestChangesBeforeRebuild(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	const n = 30
	for i := range n {
		mustPut(t, s, testEntry(i))
	}
	s2 := openStore(t, dir)
	// Before the index is rebuilt: overwrite one, add one, delete one, purge
	// a host, and read one (which indexes it).
	mustPut(t, s2, testEntry(0))
	mustPut(t, s2, testEntry(100))
	if !s2.Delete(testKey(3)) {
		t.Error("Delete of an unindexed file = false")
	}
	if _, ok := s2.Get(testKey(6)); !ok {
		t.Error("Get before rebuild missed")
	}
	// host 2 (i%3 == 1): i = 1, 4, ..., 28, and 100.
	if got := s2.DeleteFunc(func(k Key) bool { return k.HostID == 2 }); got != 1 {
		t.Errorf("DeleteFunc before rebuild = %d, want 1 (only key 100 is indexed)", got)
	}
	runStore(t, s2)
	waitReady(t, s2)
	// 30 files + key 100 - key 3 - host 2 (10 files and key 100) = 19.
	if got := s2.Stats().Entries; got != 19 {
		t.Errorf("Entries after rebuild = %d, want 19", got)
	}
	for i := range n {
		_, ok := s2.Get(testKey(i))
		want := i != 3 && testKey(i).HostID != 2
		if ok != want {
			t.Errorf("Get(%d) = %v, want %v", i, ok, want)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for i := range 4 {
		f.Add(encodeEntry(testEntry(i)))
	}
	f.Add([]byte{})
	f.Add([]byte(fileMagic + strings.Repeat("\x01", 80)))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEntry(data, 1<<20)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			if e != nil {
				t.Fatal("entry returned with an error")
			}
			return
		}
		// Only a well-formed, checksummed file decodes, and then exactly.
		if !bytes.Equal(encodeEntry(e), data) {
			t.Fatalf("decoded entry re-encodes differently")
		}
		if h, _, err := parseHead(data, 1<<20); err != nil || h.key != e.Key {
			t.Fatalf("head disagrees with body decode: %v", err)
		}
	})
}

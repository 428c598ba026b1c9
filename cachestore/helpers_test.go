package cachestore

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"
)

// openStore opens a store on dir (a fresh temp dir when empty) and closes it
// at the end of the test. It does not start Run.
func openStore(t testing.TB, dir string, mod ...func(*Options)) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	opts := Options{Dir: dir, MemoryBytes: 8 << 20, Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mod {
		m(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runStore starts Run and stops it at the end of the test (before Close).
func runStore(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
}

func waitReady(t testing.TB, s *Store) {
	t.Helper()
	waitFor(t, "index ready", func() bool { return s.Stats().IndexReady })
}

func testKey(i int) Key {
	return Key{HostID: 1 + i%3, DimensionID: 1 + i%2, URL: fmt.Sprintf("/page/%d?q=%d", i, i)}
}

func testEntry(i int) *Entry {
	return &Entry{
		Key:    testKey(i),
		Status: 200,
		Header: http.Header{
			"Content-Type": {"text/html; charset=utf-8"},
			"Link":         {"</a.css>; rel=preload", "</b.js>; rel=preload"},
		},
		Body:       []byte(fmt.Sprintf("gzip-body-of-%d-%s", i, make([]byte, i%50))),
		RenderedAt: time.Date(2026, 3, 4, 5, 6, 7, 8900+i, time.UTC),
		Partial:    i%5 == 0,
	}
}

func mustPut(t testing.TB, s *Store, e *Entry) {
	t.Helper()
	if err := s.Put(e); err != nil {
		t.Fatalf("Put %v: %v", e.Key, err)
	}
}

func sameEntry(t testing.TB, got, want *Entry) {
	t.Helper()
	if got.Key != want.Key || got.Status != want.Status || got.Partial != want.Partial ||
		got.ETag != want.ETag || !got.RenderedAt.Equal(want.RenderedAt) || string(got.Body) != string(want.Body) ||
		fmt.Sprint(got.Header) != fmt.Sprint(want.Header) {
		t.Fatalf("entry mismatch:\n got %+v\nwant %+v", got, want)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitFilesRemoved waits until the files of key(0) .. key(n-1) are gone
// from dir (the removal worker deletes them in the background).
func waitFilesRemoved(t *testing.T, dir string, n int, key func(int) Key) {
	t.Helper()
	waitFor(t, "files removed", func() bool {
		for i := range n {
			if fileExists(entryPath(dir, key(i))) {
				return false
			}
		}
		return true
	})
}

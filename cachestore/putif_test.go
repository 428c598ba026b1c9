package cachestore

import (
	"errors"
	"testing"
	"time"
)

func TestPutIfRefusesAfterPurge(t *testing.T) {
	s := openStore(t, "")
	runStore(t, s)
	waitReady(t, s)
	k := testKey(1)

	tests := []struct {
		name  string
		purge func()
	}{
		{"Delete of the key, even when absent", func() { s.Delete(k) }},
		{"DeleteFunc matching nothing", func() { s.DeleteFunc(func(Key) bool { return false }) }},
		{"DeleteAll", func() { s.DeleteAll() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gen := s.Generation(k)
			tc.purge()
			if err := s.PutIf(testEntry(1), gen); !errors.Is(err, ErrPurged) {
				t.Fatalf("PutIf after a purge: %v, want ErrPurged", err)
			}
			if _, ok := s.Get(k); ok {
				t.Fatal("entry stored despite the purge")
			}
			if err := s.PutIf(testEntry(1), s.Generation(k)); err != nil {
				t.Fatalf("PutIf with a fresh generation: %v", err)
			}
			if _, ok := s.Get(k); !ok {
				t.Fatal("entry missing after PutIf with a fresh generation")
			}
			s.Delete(k)
		})
	}
	t.Run("no purge", func(t *testing.T) {
		gen := s.Generation(k)
		mustPut(t, s, testEntry(2)) // writes elsewhere do not count
		if err := s.PutIf(testEntry(1), gen); err != nil {
			t.Fatalf("PutIf with nothing purged: %v", err)
		}
	})
}

func TestDeleteRenderedBefore(t *testing.T) {
	s := openStore(t, "")
	runStore(t, s)
	waitReady(t, s)
	old, fresh := testEntry(1), testEntry(2)
	fresh.RenderedAt = old.RenderedAt.Add(time.Hour)
	mustPut(t, s, old)
	mustPut(t, s, fresh)
	gen := s.Generation(testKey(3))
	if n := s.DeleteRenderedBefore(old.RenderedAt.Add(time.Minute)); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	if _, ok := s.Get(old.Key); ok {
		t.Error("old entry still served")
	}
	if _, ok := s.Get(fresh.Key); !ok {
		t.Error("fresh entry removed")
	}
	if err := s.PutIf(testEntry(3), gen); err != nil {
		t.Errorf("an age sweep is not a purge, PutIf: %v", err)
	}
}

func TestMaxAgeSweep(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.MaxAge = 200 * time.Millisecond })
	mustPut(t, s, testEntry(1)) // rendered in March 2026: long past MaxAge
	recent := testEntry(2)
	recent.RenderedAt = time.Now().Add(time.Hour) // stays young through the test
	mustPut(t, s, recent)
	runStore(t, s)
	waitFor(t, "the sweep to remove the old entry", func() bool {
		_, ok := s.Get(testKey(1))
		return !ok
	})
	if _, ok := s.Get(testKey(2)); !ok {
		t.Error("recent entry swept")
	}
}

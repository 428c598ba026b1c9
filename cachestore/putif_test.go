package cachestore

import (
	"errors"
	"testing"
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

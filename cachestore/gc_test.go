package cachestore

import (
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"testing"
	"time"
)

// gcCost returns the heap the GC finds scannable and the median time of a
// forced collection, over rounds collections.
func gcCost(rounds int) (scannable uint64, median time.Duration) {
	times := make([]time.Duration, rounds)
	for i := range times {
		start := time.Now()
		runtime.GC()
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	sample := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64(), times[rounds/2]
}

// TestIndexGCCost reports the GC mark work a large key index adds: the
// scannable heap and the time of runtime.GC() with the index built
// (fillLikeRebuild: index entries only) against an empty store. Run with
//
//	PRISM_MEM=1 go test -run TestIndexGCCost -v ./cachestore/
//
// PRISM_MEM_N overrides the size (the last of a comma-separated list).
func TestIndexGCCost(t *testing.T) {
	if os.Getenv("PRISM_MEM") == "" {
		t.Skip("set PRISM_MEM=1 to measure")
	}
	n := 1_000_000
	if v := os.Getenv("PRISM_MEM_N"); v != "" {
		f := splitComma(v)
		n, _ = strconv.Atoi(f[len(f)-1])
	}
	s := openStore(t, "", func(o *Options) { o.MemoryBytes = 64 << 20 })
	scan0, gc0 := gcCost(9)
	fillLikeRebuild(s, n)
	scan1, gc1 := gcCost(9)
	if got := s.Stats().Entries; got != n {
		t.Fatalf("Entries = %d, want %d", got, n)
	}
	t.Logf("n=%d: scannable heap %.1f MB -> %.1f MB (+%.1f B/key); runtime.GC() median %v -> %v",
		n, float64(scan0)/1e6, float64(scan1)/1e6, float64(int64(scan1)-int64(scan0))/float64(n),
		gc0.Round(10*time.Microsecond), gc1.Round(10*time.Microsecond))
	runtime.KeepAlive(s)
}

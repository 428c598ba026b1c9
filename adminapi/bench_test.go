package adminapi

import (
	"fmt"
	"testing"

	"github.com/prismproxy/prism/cachestore"
)

// BenchmarkPurgeMatch is the glob side of /purge/pattern: matching one
// compiled pattern against 100k keys, as the store's DeleteFunc scan does
// (cachestore's BenchmarkDeleteFunc is the store side). It reports ns per
// key; bench/run.sh growth times the whole purge over 1M keys.
func BenchmarkPurgeMatch(b *testing.B) {
	const n = 100_000
	keys := make([]cachestore.Key, n)
	for i := range keys {
		url := fmt.Sprintf("/c%02d/product-%d", i%20, i)
		if i%4 == 0 {
			url += fmt.Sprintf("?page=%d", i%7)
		}
		keys[i] = cachestore.Key{HostID: i % 2, DimensionID: i % 3, URL: url}
	}
	s := &Server{}
	for _, p := range []string{"/c07/*", "/**/product-9*", "/nothing/**", "/c1?/product-*"} {
		m, err := s.compilePattern(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			matched := 0
			for b.Loop() {
				matched = 0
				for _, k := range keys {
					if m.Match(k) {
						matched++
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/key")
			b.ReportMetric(float64(matched), "matched")
		})
	}
}

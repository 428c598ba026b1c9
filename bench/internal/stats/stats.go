// Package stats holds the latency figures the bench programs print.
package stats

import (
	"slices"
	"time"
)

// Percentile returns the p-th percentile (nearest rank) of ds, 0 if empty.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(i, 1)-1]
}

// MS is d in milliseconds.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

package recache

import (
	"fmt"
	"testing"

	"github.com/prismproxy/prism/cachestore"
)

func benchKeys(n, hosts int) []cachestore.Key {
	keys := make([]cachestore.Key, n)
	for i := range keys {
		keys[i] = key(1+i%hosts, 1+i%2, fmt.Sprintf("/catalog/item-%d?ref=bench", i))
	}
	return keys
}

// BenchmarkEnqueue10000 measures one durable Enqueue of 10000 URLs (one
// journal write and fsync) into an empty scheduler.
func BenchmarkEnqueue10000(b *testing.B) {
	keys := benchKeys(10000, 4)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		f := newFixture(b, 4, 0, nil, nil)
		b.StartTimer()
		if n, err := f.s.Enqueue(keys, High); err != nil || n != len(keys) {
			b.Fatalf("Enqueue = %d, %v", n, err)
		}
		b.StopTimer()
		f.s.Close()
		b.StartTimer()
	}
}

// BenchmarkDispatch measures one Tick moving 100 due entries (4 hosts, high
// and normal) into the internal queue, plus settling them as rendered; the
// reported time is per tick.
func BenchmarkDispatch(b *testing.B) {
	f := newFixture(b, 4, 100, nil, func(o *Options) { o.QueueSize = 100 })
	keys := benchKeys(20000, 4)
	refill := func() {
		if _, err := f.s.Enqueue(keys[:10000], High); err != nil {
			b.Fatal(err)
		}
		if _, err := f.s.Enqueue(keys[10000:], Normal); err != nil {
			b.Fatal(err)
		}
	}
	refill()
	now := f.clk.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f.s.Tick(now)
		if len(f.s.jobs) == 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
			continue
		}
		for len(f.s.jobs) > 0 {
			j := <-f.s.jobs
			f.s.finish(j.it, outcomeOK, nil)
		}
	}
}

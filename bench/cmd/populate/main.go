// Command populate fills a PRISM cache directory with N entries through the
// cachestore package (Store.Put), so the growth benchmarks need not render a
// million pages. Keys are host 1, dimension 1, URL /cNN/item-NNNNNNN (20
// categories), each with the same small gzip body.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

func main() {
	dir := flag.String("dir", "", "cache directory (required)")
	n := flag.Int("n", 1000, "entries to write")
	from := flag.Int("from", 0, "first item number (to extend an existing directory)")
	workers := flag.Int("workers", 16, "parallel Put calls")
	size := flag.Int("size", 8<<10, "uncompressed HTML bytes per entry")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "populate: -dir is required")
		os.Exit(2)
	}
	if err := run(*dir, *from, *n, *workers, *size); err != nil {
		fmt.Fprintln(os.Stderr, "populate:", err)
		os.Exit(1)
	}
}

// URL returns the cache-key URL of item i; bench scripts use the same form.
func URL(i int) string { return fmt.Sprintf("/c%02d/item-%07d", i%20, i) }

// prose returns about n bytes of pseudo-random words, which gzip about as
// well as real page text (3-4x), unlike a repeated string.
func prose(n int) string {
	words := strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod
tempor incididunt ut labore et dolore magna aliqua widget gadget gizmo shipping returns warranty
stainless aluminium ergonomic portable wireless battery charger compact durable premium classic`)
	var b strings.Builder
	x := uint32(12345)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteString(words[x%uint32(len(words))])
		b.WriteByte(' ')
	}
	return b.String()
}

func run(dir string, from, n, workers, size int) error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := cachestore.New(cachestore.Options{Dir: dir, MemoryBytes: 1 << 20, Logger: logger})
	if err != nil {
		return err
	}
	defer st.Close()
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	page := "<!DOCTYPE html><html><head><title>item</title></head><body><p>" + prose(size) + "</p></body></html>"
	zw.Write([]byte(page))
	zw.Close()
	body := zb.Bytes()
	rendered := time.Now()

	start := time.Now()
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= from+n {
					return
				}
				e := &cachestore.Entry{
					Key:        cachestore.Key{HostID: 1, DimensionID: 1, URL: URL(i)},
					Status:     http.StatusOK,
					Header:     http.Header{"Content-Type": {"text/html; charset=utf-8"}},
					Body:       body,
					RenderedAt: rendered,
				}
				if err := st.Put(e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if s := st.Stats(); s.DiskErrors > 0 {
		return fmt.Errorf("%d disk errors", s.DiskErrors)
	}
	el := time.Since(start)
	fmt.Printf("populate: %d entries (%d-byte gzip body) in %v (%.0f/s)\n", n, len(body), el.Round(time.Millisecond), float64(n)/el.Seconds())
	return nil
}

// Package cachestore keeps rendered pages in a memory tier (ristretto) over a
// crash-safe disk tier, with a key index for purge, status and scheduling.
package cachestore

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Key identifies one cached page.
type Key struct {
	HostID      int
	DimensionID int
	URL         string // normalized URL: path plus sorted query, starts with "/"
}

// String returns the key's canonical form "host/dimension/url", e.g.
// "1/2/a?b=1" for Key{1, 2, "/a?b=1"}.
func (k Key) String() string { return fmt.Sprintf("%d/%d%s", k.HostID, k.DimensionID, k.URL) }

// Entry is one stored render.
type Entry struct {
	Key        Key
	Status     int
	Header     http.Header // response headers to replay (Content-Type, Location, meta headers)
	Body       []byte      // gzip-compressed body
	RenderedAt time.Time
	Partial    bool   // captured at the render timeout, before the page was ready
	ETag       string // strong ETag (quoted) of the uncompressed body; set by Put when empty
}

// Meta is what the key index holds about an entry.
type Meta struct {
	Key        Key
	Status     int
	RenderedAt time.Time
	Size       int64 // stored (compressed) bytes
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Entries      int   // entries in the index
	MemoryBytes  int64 // bytes held by the memory tier
	DiskBytes    int64
	IndexReady   bool // false while the index is being rebuilt at start
	DiskErrors   uint64
	DiskDegraded bool // disk writes failing: memory-only
}

// Options configures a Store.
type Options struct {
	Dir         string       // required: where entry files live
	MemoryBytes int64        // memory tier bound; 0 means 256 MiB
	Logger      *slog.Logger // nil: slog.Default()
	Metrics     *metrics.Set // nil: no metrics
	Now         func() time.Time
}

// Store is the two-tier cache. It is safe for concurrent use.
type Store struct {
	opts Options
}

// New opens (creating if needed) the store under opts.Dir. It returns at once;
// Run rebuilds the key index from disk in the background.
func New(opts Options) (*Store, error) { return &Store{opts: opts}, nil }

// Run rebuilds the key index and performs background file removal until ctx
// is done.
func (s *Store) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Get returns the entry for k from memory, else from disk (promoting it to
// memory). A missing, torn or corrupt file is a miss (and a corrupt file is removed).
func (s *Store) Get(k Key) (*Entry, bool) { return nil, false }

// Put stores e on disk (temp file, fsync, rename) and in memory, and indexes it.
func (s *Store) Put(e *Entry) error { return nil }

// Delete removes k's metadata and memory copy at once (file in the
// background) and reports whether it existed.
func (s *Store) Delete(k Key) bool { return false }

// DeleteFunc removes every indexed entry whose key satisfies match and
// returns how many it removed.
func (s *Store) DeleteFunc(match func(Key) bool) int { return 0 }

// DeleteAll removes every entry and returns how many it removed.
func (s *Store) DeleteAll() int { return 0 }

// Range calls fn for a snapshot of the index until fn returns false.
func (s *Store) Range(fn func(Meta) bool) {}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats { return Stats{} }

// Close stops the memory tier and flushes pending file removals.
func (s *Store) Close() error { return nil }

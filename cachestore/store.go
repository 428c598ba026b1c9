// Package cachestore keeps rendered pages in a memory tier (ristretto) over a
// crash-safe disk tier, with a key index for purge, status and scheduling.
//
// Reads never need the index: a key's file path is derived from a hash of
// the key, and every file carries a checksum, so a torn, truncated or
// tampered file is a miss (and is removed), never a page served. The index
// is rebuilt from the files in the background by Run, while the store
// already serves.
package cachestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/internal/metricdoc"
)

// Errors returned by the Store.
var (
	ErrInvalidEntry = errors.New("cachestore: invalid entry")
	ErrTooLarge     = errors.New("cachestore: entry too large")
	ErrRunning      = errors.New("cachestore: Run already called")
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
//
// Entries are shared: Put takes ownership of the Entry it is given, and Get
// returns the stored Entry itself. Neither side may modify an Entry (or its
// Header or Body) after handing it over or receiving it.
type Entry struct {
	Key        Key
	Status     int
	Header     http.Header // response headers to replay (Content-Type, Location, meta headers)
	Body       []byte      // gzip-compressed body
	RenderedAt time.Time
	Partial    bool   // captured at the render timeout, before the page was ready
	ETag       string // strong ETag (quoted) of the body; set by Put when empty
}

// Meta is what the key index holds about an entry.
type Meta struct {
	Key        Key
	Status     int
	RenderedAt time.Time
	Size       int64 // stored (compressed) body bytes
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Entries      int   // entries in the index
	MemoryBytes  int64 // bytes held by the memory tier
	DiskBytes    int64 // bytes of the indexed entry files
	IndexReady   bool  // false while the index is being rebuilt at start
	DiskErrors   uint64
	DiskDegraded bool   // disk writes failing: memory-only
	Evictions    uint64 // entries removed to keep the disk tier under Options.MaxDiskBytes
}

// Options configures a Store.
type Options struct {
	Dir           string           // required: where entry files live; created if missing
	MemoryBytes   int64            // memory tier bound; 0 means 256 MiB
	MaxEntryBytes int64            // largest body Put accepts and Get reads; 0 means 64 MiB
	Logger        *slog.Logger     // nil: slog.Default()
	Metrics       *metricdoc.Set   // nil: no metrics
	Now           func() time.Time // stamps Entry.RenderedAt when Put gets it zero; nil: time.Now
	// MaxAge removes entries rendered longer ago than this (Run sweeps for
	// them every MaxAge/4, at most every 10 minutes): an entry past every
	// freshness and stale window is never served, only kept on disk. 0:
	// entries are kept until deleted.
	MaxAge time.Duration
	// MaxDiskBytes bounds the bytes of the entry files on disk: when a Put
	// takes them past it, Run removes the entries rendered longest ago, from
	// disk and memory, until they are at most 90% of it (see evict.go). The
	// bound is enforced in the background, so the disk tier may pass it
	// briefly. 0: no bound.
	MaxDiskBytes int64
}

// Store is the two-tier cache. It is safe for concurrent use.
//
// A memory hit takes no Store lock and allocates nothing. The key index is
// sharded; Put, Delete and disk reads lock one shard.
type Store struct {
	dir      string
	maxBody  int64
	maxAge   time.Duration
	maxDisk  int64 // Options.MaxDiskBytes; 0: no bound
	log      *slog.Logger
	now      func() time.Time
	seed     maphash.Seed
	instance string // tags this process's temp files
	tmpSeq   atomic.Uint64
	mem      *memTier

	shards [numShards]shard

	entries   atomic.Int64
	diskBytes atomic.Int64
	ready     atomic.Bool
	degraded  atomic.Bool
	diskErrs  atomic.Uint64

	memHits, diskHits, misses, diskErrCount, corruptCount *metrics.Counter
	evictCount, evictBytes                                *metrics.Counter

	evictions   atomic.Uint64
	evictSignal chan struct{} // a Put took the disk tier past maxDisk

	purgeMu sync.Mutex
	purges  []func(Key) bool // DeleteFunc matchers issued before the index was ready

	rmMu     sync.Mutex
	rmQueue  []string // packKey forms of tombstoned keys
	rmSignal chan struct{}

	running   atomic.Bool
	closeOnce sync.Once
}

// New opens (creating if needed) the store under opts.Dir. It returns at once;
// Run rebuilds the key index from disk in the background.
func New(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cachestore: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cachestore: create dir: %w", err)
	}
	if opts.MemoryBytes <= 0 {
		opts.MemoryBytes = 256 << 20
	}
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxDiskBytes < 0 {
		return nil, errors.New("cachestore: Options.MaxDiskBytes is negative")
	}
	mem, err := newMemTier(opts.MemoryBytes)
	if err != nil {
		return nil, err
	}
	var tag [6]byte
	rand.Read(tag[:])
	s := &Store{
		dir:      opts.Dir,
		maxBody:  opts.MaxEntryBytes,
		maxAge:   opts.MaxAge,
		maxDisk:  opts.MaxDiskBytes,
		log:      opts.Logger,
		now:      opts.Now,
		seed:     maphash.MakeSeed(),
		instance: hex.EncodeToString(tag[:]),
		mem:      mem,
		rmSignal: make(chan struct{}, 1),

		evictSignal: make(chan struct{}, 1),
	}
	for i := range s.shards {
		s.shards[i].entries = newKeyIndex(s.seed)
		s.shards[i].tombs = make(map[string]struct{})
	}
	s.registerMetrics(opts.Metrics)
	return s, nil
}

// registerMetrics exposes the store's metrics in set. With a nil set the
// counters still exist (unexported) so the hot path needs no checks.
// One Store per Set: a second Store on the same Set shares the counters and
// the first Store's gauges.
func (s *Store) registerMetrics(set *metricdoc.Set) {
	const hits = "Cache lookups answered from a tier (memory, disk)."
	s.memHits = set.Counter(`prism_cache_hits_total{tier="memory"}`, hits)
	s.diskHits = set.Counter(`prism_cache_hits_total{tier="disk"}`, hits)
	s.misses = set.Counter(`prism_cache_misses_total`, "Cache lookups that found no entry in any tier.")
	s.diskErrCount = set.Counter(`prism_cache_disk_errors_total`, "Disk tier reads and writes that failed.")
	s.corruptCount = set.Counter(`prism_cache_corrupt_files_total`, "Cache files found damaged, and removed.")
	s.evictCount = set.Counter(`prism_cache_disk_evictions_total`, "Cache files removed to keep the disk tier under its byte bound.")
	s.evictBytes = set.Counter(`prism_cache_disk_evicted_bytes_total`, "Bytes of cache files removed to keep the disk tier under its byte bound.")
	set.Gauge(`prism_cache_entries`, "Entries in the cache (each key once, whatever its tiers).",
		func() float64 { return float64(s.entries.Load()) })
	set.Gauge(`prism_cache_memory_bytes`, "Bytes the memory tier holds.",
		func() float64 { return float64(s.memoryBytes()) })
	set.Gauge(`prism_cache_disk_bytes`, "Bytes of cache files in the disk tier.",
		func() float64 { return float64(s.diskBytes.Load()) })
	set.Gauge(`prism_cache_disk_degraded`, "1 while the disk tier fails and the cache runs on memory only, else 0.", func() float64 {
		if s.degraded.Load() {
			return 1
		}
		return 0
	})
	set.Gauge(`prism_cache_index_ready`, "1 once the key index is rebuilt from disk (pattern purges see every entry), else 0.", func() float64 {
		if s.ready.Load() {
			return 1
		}
		return 0
	})
}

// Run rebuilds the key index and performs background file removal, the
// MaxAge sweep and the MaxDiskBytes eviction until ctx is done. It returns
// nil when ctx is done, and ErrRunning if called twice.
func (s *Store) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.rebuild(ctx)
		// Files from before the start count only now: check the bound.
		s.wakeEvict()
	}()
	var sweep <-chan time.Time
	if s.maxAge > 0 {
		t := time.NewTicker(min(s.maxAge/4, 10*time.Minute))
		defer t.Stop()
		sweep = t.C
	}
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-s.rmSignal:
			s.drainRemovals(ctx)
		case <-s.evictSignal:
			if !s.ready.Load() {
				continue // the rebuild wakes eviction when it ends
			}
			s.evict(ctx)
		case <-sweep:
			if !s.ready.Load() {
				continue // the next sweep sees the whole index
			}
			if n := s.DeleteRenderedBefore(s.now().Add(-s.maxAge)); n > 0 {
				s.log.Info("cachestore: removed entries past every freshness window", "count", n, "max_age", s.maxAge)
			}
		}
	}
}

// Get returns the entry for k from memory, else from disk (promoting it to
// memory). A missing, torn or corrupt file is a miss (and a corrupt file is
// removed). The returned Entry is shared and must not be modified.
func (s *Store) Get(k Key) (*Entry, bool) {
	h := hashKey(s.seed, k)
	if e, ok := s.mem.Get(h); ok && e != nil && e.Key == k {
		s.memHits.Inc()
		return e, true
	}
	e, ok := s.getDisk(k, h)
	if ok {
		s.diskHits.Inc()
	} else {
		s.misses.Inc()
	}
	return e, ok
}

// getDisk reads k's file, validating it fully, and promotes it to memory if
// nothing changed the key meanwhile.
func (s *Store) getDisk(k Key, h uint64) (*Entry, bool) {
	var kb [128]byte
	pk := packKey(kb[:0], k)
	sh := s.shardFor(h)
	sh.mu.RLock()
	_, tomb := sh.tombs[string(pk)]
	ie, indexed := sh.entries.get(string(pk))
	seq := sh.seq
	sh.mu.RUnlock()
	switch {
	case indexed && !ie.onDisk():
		// Memory-only and no longer in memory: the entry is gone.
		s.dropIfUnchanged(sh, pk, seq)
		return nil, false
	case tomb:
		return nil, false
	case !indexed && s.ready.Load():
		return nil, false // the complete index is authoritative
	}

	path := entryPath(s.dir, k)
	e, info, err := readEntryFile(path, s.maxBody)
	if err == nil && e.Key != k {
		err = corruptf("file holds key %q", e.Key.String())
	}
	if err != nil {
		switch {
		case errors.Is(err, errCorrupt):
			s.noteCorrupt(path, err)
			sh.mu.Lock()
			if sh.seq == seq {
				removeIfSame(path, info)
				s.dropLocked(sh, string(pk))
				sh.seq++
			}
			sh.mu.Unlock()
		case errors.Is(err, fs.ErrNotExist):
			if indexed {
				s.dropIfUnchanged(sh, pk, seq)
			}
		default:
			s.log.Warn("cachestore: read entry file", "path", path, "err", err)
		}
		return nil, false
	}

	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.seq != seq {
		// Put or Delete raced with the read: serve what we read unless the
		// key is deleted now, but do not promote a possibly stale copy.
		if _, tomb := sh.tombs[string(pk)]; tomb {
			return nil, false
		}
		if _, ok := sh.entries.get(string(pk)); !ok && s.ready.Load() {
			return nil, false
		}
		return e, true
	}
	if _, ok := sh.entries.get(string(pk)); !ok {
		// Read before the rebuild reached this file: index it now so a purge
		// finds it, unless a purge issued during the rebuild already matches.
		if s.purgedDuringRebuild(k) {
			removeIfSame(path, info)
			sh.seq++
			return nil, false
		}
		s.setLocked(sh, string(pk), newIndexEntry(e.Status, e.RenderedAt, int64(len(e.Body)), info.Size(), true))
	}
	s.mem.Set(h, e, entryCost(e, info.Size()))
	return e, true
}

// dropIfUnchanged forgets the index entry of the key packed as pk if
// nothing touched it since seq.
func (s *Store) dropIfUnchanged(sh *shard, pk []byte, seq uint64) {
	sh.mu.Lock()
	if sh.seq == seq && s.dropLocked(sh, string(pk)) {
		sh.seq++
	}
	sh.mu.Unlock()
}

func (s *Store) noteCorrupt(path string, err error) {
	s.corruptCount.Inc()
	s.log.Warn("cachestore: removing corrupt entry file", "path", path, "err", err)
}

// Put stores e on disk (temp file, fsync, rename) and in memory, and indexes
// it. Put takes ownership of e; it sets e.ETag when empty (see etagOf) and
// e.RenderedAt when zero.
//
// It returns an error only for an entry the store cannot hold (ErrInvalidEntry,
// ErrTooLarge). When the disk write fails, Put keeps the entry in memory only,
// counts the error in Stats.DiskErrors, sets Stats.DiskDegraded (logging once
// per transition) and returns nil: the caller could do nothing more useful.
// The first successful write clears DiskDegraded.
func (s *Store) Put(e *Entry) error {
	_, err := s.put(e, 0, false)
	return err
}

// ErrPurged is returned by PutIf when a purge touched the entry's key after
// the generation was taken.
var ErrPurged = errors.New("cachestore: key purged since the render started")

// Generation returns a token for k that changes whenever a Delete or
// DeleteFunc could have removed k. Take it before rendering and pass it to
// PutIf, so a render that started before a purge cannot put the purged page
// back. (Unrelated deletes may change it too: PutIf then refuses a render
// that was fine, which only costs a render.)
func (s *Store) Generation(k Key) uint64 {
	sh := s.shardFor(hashKey(s.seed, k))
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.purges
}

// PutIf is Put, unless the key's generation has changed since gen was taken
// with Generation: then it stores nothing and returns ErrPurged.
func (s *Store) PutIf(e *Entry, gen uint64) error {
	stored, err := s.put(e, gen, true)
	if err == nil && !stored {
		return ErrPurged
	}
	return err
}

// put stores e; with check, only if the key's shard generation is still gen.
func (s *Store) put(e *Entry, gen uint64, check bool) (bool, error) {
	if err := validateEntry(e, s.maxBody); err != nil {
		return false, err
	}
	if e.ETag == "" {
		e.ETag = etagOf(e.Body)
	}
	if e.RenderedAt.IsZero() {
		e.RenderedAt = s.now()
	}
	data := encodeEntry(e)
	k := e.Key
	h := hashKey(s.seed, k)
	path := entryPath(s.dir, k)
	tmp, werr := s.writeTemp(path, data)

	sh := s.shardFor(h)
	sh.mu.Lock()
	if check && sh.purges != gen {
		sh.mu.Unlock()
		if werr == nil {
			os.Remove(tmp)
		}
		return false, nil
	}
	if werr == nil {
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			werr = fmt.Errorf("rename entry file: %w", err)
		}
	}
	ik := s.putLocked(sh, h, e, int64(len(data)), werr == nil)
	sh.mu.Unlock()
	if s.maxDisk > 0 && s.diskBytes.Load() > s.maxDisk {
		s.wakeEvict()
	}

	if werr == nil {
		werr = syncDir(filepath.Dir(path))
	} else {
		s.enqueueRemoval(ik)
	}
	s.noteDiskWrite(werr)
	s.mem.Wait() // the entry is in memory (unless the admission policy refused it) when Put returns
	return true, nil
}

// putLocked records what Put leaves in memory for e: its index entry, its
// tombstone state and its memory copy. fileSize counts only when onDisk. It
// returns the key's packed form. sh.mu must be held.
func (s *Store) putLocked(sh *shard, h uint64, e *Entry, fileSize int64, onDisk bool) string {
	var kb [128]byte
	pk := packKey(kb[:0], e.Key)
	ik := string(pk)
	s.setLocked(sh, ik, newIndexEntry(e.Status, e.RenderedAt, int64(len(e.Body)), fileSize, onDisk))
	if onDisk {
		delete(sh.tombs, ik)
	} else {
		// An older file may hold an older render: keep Get from reading it
		// and have it removed.
		sh.tombs[ik] = struct{}{}
	}
	sh.seq++
	s.mem.Set(h, e, entryCost(e, 0))
	return ik
}

// noteDiskWrite tracks the disk-degraded state, logging each transition once.
func (s *Store) noteDiskWrite(err error) {
	if err == nil {
		if s.degraded.CompareAndSwap(true, false) {
			s.log.Info("cachestore: disk writes recovered")
		}
		return
	}
	s.diskErrs.Add(1)
	s.diskErrCount.Inc()
	if s.degraded.CompareAndSwap(false, true) {
		s.log.Error("cachestore: disk writes failing, keeping new entries in memory only", "err", err)
	}
}

// Delete removes k's metadata and memory copy at once (file in the
// background) and reports whether it existed. Get misses k as soon as Delete
// returns.
func (s *Store) Delete(k Key) bool {
	h := hashKey(s.seed, k)
	ik := string(packKey(nil, k))
	sh := s.shardFor(h)
	sh.mu.Lock()
	sh.purges++
	existed := s.dropLocked(sh, ik)
	if !existed && !s.ready.Load() {
		// The rebuild may not have reached k's file yet.
		if _, err := os.Lstat(entryPath(s.dir, k)); err == nil {
			existed = true
		}
	}
	if existed {
		sh.tombs[ik] = struct{}{}
		sh.seq++
		s.mem.Del(h)
	}
	sh.mu.Unlock()
	if existed {
		// A promotion queued in the memory tier just before the Del could
		// otherwise become visible for a moment; Wait applies both.
		s.mem.Wait()
		s.enqueueRemoval(ik)
	}
	return existed
}

// DeleteFunc removes every indexed entry whose key satisfies match and
// returns how many it removed. match is called with a shard of the index
// locked and must not call the Store.
//
// While the index is still being rebuilt, files it has not reached yet are
// purged too when found (by the rebuild or by Get), but are not counted.
func (s *Store) DeleteFunc(match func(Key) bool) int {
	if !s.ready.Load() {
		s.purgeMu.Lock()
		if !s.ready.Load() {
			s.purges = append(s.purges, match)
		}
		s.purgeMu.Unlock()
	}
	return s.deleteWhere(true, func(ik string, _ indexEntry) bool { return match(unpackKey(ik)) })
}

// DeleteRenderedBefore removes every indexed entry rendered before t and
// returns how many it removed. Unlike a purge, it does not stop renders in
// flight from being stored (their pages are new).
func (s *Store) DeleteRenderedBefore(t time.Time) int {
	return s.deleteWhere(false, func(_ string, ie indexEntry) bool { return ie.renderedAt().Before(t) })
}

// deleteWhere removes the indexed entries match selects; purge marks it as a
// purge for Generation.
func (s *Store) deleteWhere(purge bool, match func(string, indexEntry) bool) int {
	n := 0
	var removed []string
	for i := range s.shards {
		sh := &s.shards[i]
		removed = removed[:0]
		sh.mu.Lock()
		if purge {
			sh.purges++
		}
		// Collect, then remove: a removal may compact the shard's index.
		for ik, ie := range sh.entries.all() {
			if match(ik, ie) {
				removed = append(removed, ik)
			}
		}
		for _, ik := range removed {
			s.tombstoneLocked(sh, ik)
		}
		if len(removed) > 0 {
			sh.seq++
		}
		sh.mu.Unlock()
		s.enqueueRemoval(removed...)
		n += len(removed)
	}
	if n > 0 {
		s.mem.Wait() // as in Delete; also settles the accounting for Stats
	}
	return n
}

// DeleteAll removes every entry and returns how many it removed.
func (s *Store) DeleteAll() int { return s.DeleteFunc(func(Key) bool { return true }) }

// Range calls fn for a snapshot of the index until fn returns false. The
// snapshot is taken one shard at a time; fn runs with no lock held.
func (s *Store) Range(fn func(Meta) bool) {
	var metas []Meta
	for i := range s.shards {
		sh := &s.shards[i]
		metas = metas[:0]
		sh.mu.RLock()
		for ik, ie := range sh.entries.all() {
			metas = append(metas, ie.meta(ik))
		}
		sh.mu.RUnlock()
		for _, m := range metas {
			if !fn(m) {
				return
			}
		}
	}
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Entries:      int(s.entries.Load()),
		MemoryBytes:  s.memoryBytes(),
		DiskBytes:    s.diskBytes.Load(),
		IndexReady:   s.ready.Load(),
		DiskErrors:   s.diskErrs.Load(),
		DiskDegraded: s.degraded.Load(),
		Evictions:    s.evictions.Load(),
	}
}

func (s *Store) memoryBytes() int64 { return s.mem.MaxCost() - s.mem.RemainingCost() }

// Close stops the memory tier and flushes pending file removals. Call it
// after Run has returned; the Store must not be used afterwards.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.drainRemovals(context.Background())
		s.mem.Close()
	})
	return nil
}

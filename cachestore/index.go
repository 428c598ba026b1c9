package cachestore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const numShards = 256

// indexEntry is the index's record of one key.
type indexEntry struct {
	meta     Meta
	fileSize int64 // bytes on disk; 0 when !onDisk
	onDisk   bool  // false: memory-only (the disk write failed)
}

// shard is one slice of the key index. Its lock also orders everything that
// changes the key's file or memory copy, so a disk read can tell (by seq)
// whether what it read is still current.
//
// A tombstone marks a key whose file must not be read: it was deleted (or
// its latest Put could not reach the disk) and the file is waiting in the
// removal queue. Put clears it; the removal worker removes the file and the
// tombstone together, under the lock.
type shard struct {
	mu      sync.RWMutex
	entries map[Key]indexEntry
	tombs   map[Key]struct{}
	seq     uint64 // bumped by every change to a key's file, index entry or tombstone
	_       [64]byte
}

func (s *Store) shardFor(h uint64) *shard { return &s.shards[h>>56] }

// setLocked records ie for k, keeping the counters right. sh.mu must be held.
func (s *Store) setLocked(sh *shard, k Key, ie indexEntry) {
	if old, ok := sh.entries[k]; ok {
		s.diskBytes.Add(-old.fileSize)
	} else {
		s.entries.Add(1)
	}
	s.diskBytes.Add(ie.fileSize)
	sh.entries[k] = ie
}

// dropLocked forgets k's index entry and reports whether there was one.
// sh.mu must be held.
func (s *Store) dropLocked(sh *shard, k Key) bool {
	old, ok := sh.entries[k]
	if !ok {
		return false
	}
	delete(sh.entries, k)
	s.entries.Add(-1)
	s.diskBytes.Add(-old.fileSize)
	return true
}

// purgedDuringRebuild reports whether a DeleteFunc issued while the index was
// incomplete matches k, so files not indexed yet are purged too.
func (s *Store) purgedDuringRebuild(k Key) bool {
	s.purgeMu.Lock()
	defer s.purgeMu.Unlock()
	for _, match := range s.purges {
		if match(k) {
			return true
		}
	}
	return false
}

// enqueueRemoval queues the files of tombstoned keys for the removal worker.
func (s *Store) enqueueRemoval(keys ...Key) {
	if len(keys) == 0 {
		return
	}
	s.rmMu.Lock()
	s.rmQueue = append(s.rmQueue, keys...)
	s.rmMu.Unlock()
	select {
	case s.rmSignal <- struct{}{}:
	default:
	}
}

// drainRemovals removes queued files until the queue is empty or ctx is done.
func (s *Store) drainRemovals(ctx context.Context) {
	for ctx.Err() == nil {
		s.rmMu.Lock()
		batch := s.rmQueue
		if len(batch) > 256 {
			batch = batch[:256:256]
			s.rmQueue = s.rmQueue[256:]
		} else {
			s.rmQueue = nil
		}
		s.rmMu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, k := range batch {
			s.removeTombstoned(k)
		}
	}
}

// removeTombstoned removes k's file if k is still tombstoned. A Put since the
// tombstone owns the file now and cleared the tombstone.
func (s *Store) removeTombstoned(k Key) {
	sh := s.shardFor(hashKey(s.seed, k))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.tombs[k]; !ok {
		return
	}
	if err := os.Remove(entryPath(s.dir, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Keep the tombstone: the file stays unreadable through Get; a
		// restart will find and index it again, which is the best we can do.
		s.log.Warn("cachestore: remove entry file", "key", k.String(), "err", err)
		return
	}
	delete(sh.tombs, k)
	sh.seq++
}

// rebuild walks the store's directory and indexes every valid entry file,
// removing corrupt files and temp files left by an earlier process.
func (s *Store) rebuild(ctx context.Context) {
	start := time.Now()
	var st rebuildStats
	tops, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Error("cachestore: index rebuild", "err", err)
	}
	for _, top := range tops {
		if !top.IsDir() || !isHexName(top.Name(), 2) {
			continue
		}
		topDir := filepath.Join(s.dir, top.Name())
		subs, err := os.ReadDir(topDir)
		if err != nil {
			s.log.Warn("cachestore: index rebuild", "err", err)
			continue
		}
		for _, sub := range subs {
			if !sub.IsDir() || !isHexName(sub.Name(), 2) {
				continue
			}
			subDir := filepath.Join(topDir, sub.Name())
			files, err := os.ReadDir(subDir)
			if err != nil {
				s.log.Warn("cachestore: index rebuild", "err", err)
				continue
			}
			for _, f := range files {
				if ctx.Err() != nil {
					return
				}
				s.indexFile(subDir, f.Name(), top.Name()+sub.Name(), &st)
			}
		}
	}
	s.purgeMu.Lock()
	s.ready.Store(true)
	s.purges = nil
	s.purgeMu.Unlock()
	s.log.Info("cachestore: index rebuilt", "entries", st.indexed, "corrupt_removed", st.corrupt,
		"temp_removed", st.temps, "took", time.Since(start).Round(time.Millisecond))
}

type rebuildStats struct{ indexed, corrupt, temps int }

// indexFile indexes one file found by the rebuild walk.
func (s *Store) indexFile(dir, name, prefix string, st *rebuildStats) {
	path := filepath.Join(dir, name)
	if isTempName(name) {
		if !strings.Contains(name, tempMarker+s.instance+"-") {
			if os.Remove(path) == nil {
				st.temps++
			}
		}
		return
	}
	if !isHexName(name, 64) || !strings.HasPrefix(name, prefix) {
		return // not ours: leave it alone
	}
	h, info, err := readFileHead(path, s.maxBody)
	if err == nil && fileName(h.key) != name {
		err = corruptf("file name does not match its key")
	}
	if err != nil {
		if errors.Is(err, errCorrupt) {
			s.noteCorrupt(path, err)
			removeIfSame(path, info)
			st.corrupt++
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cachestore: index rebuild", "err", err)
		}
		return
	}
	k := h.key
	sh := s.shardFor(hashKey(s.seed, k))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.entries[k]; ok {
		return // a Put or Get since start indexed a newer view
	}
	if _, ok := sh.tombs[k]; ok {
		return // deleted since start
	}
	// The file may have been replaced or removed since we read its head.
	if cur, err := os.Lstat(path); err != nil || !os.SameFile(cur, info) {
		return
	}
	if s.purgedDuringRebuild(k) {
		os.Remove(path)
		sh.seq++
		return
	}
	s.setLocked(sh, k, indexEntry{
		meta:     Meta{Key: k, Status: h.status, RenderedAt: h.renderedAt, Size: h.bodyLen},
		fileSize: info.Size(),
		onDisk:   true,
	})
	st.indexed++
}

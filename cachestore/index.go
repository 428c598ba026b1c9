package cachestore

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const numShards = 256

// The index holds a million keys in a few tens of MB: each key is its packed
// form (packKey) in a shard's byte arena and a 24-byte indexEntry in a
// pointer-free slot (see keyIndex), and Meta values are built only when
// Range asks.

// packKey appends k's index form to dst: HostID and DimensionID as zigzag
// varints, then the URL. Distinct keys pack to distinct strings.
func packKey(dst []byte, k Key) []byte {
	dst = binary.AppendVarint(dst, int64(k.HostID))
	dst = binary.AppendVarint(dst, int64(k.DimensionID))
	return append(dst, k.URL...)
}

// unpackKey decodes packKey's form. The URL shares ik's bytes (for a key
// from the index, its arena's: see keyIndex).
func unpackKey(ik string) Key {
	host, rest := stringVarint(ik)
	dim, url := stringVarint(rest)
	return Key{HostID: int(host), DimensionID: int(dim), URL: url}
}

// stringVarint decodes a zigzag varint at the start of s and returns it and
// the rest of s. s comes from packKey, so it is well formed.
func stringVarint(s string) (int64, string) {
	var ux uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		ux |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			x := int64(ux >> 1)
			if ux&1 != 0 {
				x = ^x
			}
			return x, s[i+1:]
		}
	}
	return 0, ""
}

// indexEntry is the index's record of one key, packed into 24 bytes:
//
//	sec   RenderedAt, Unix seconds
//	size  stored body bytes (Meta.Size)
//	bits  RenderedAt's nanoseconds (30 bits) | status (10 bits) |
//	      on disk (1 bit) | file bytes beyond the body (23 bits)
//
// The file's bytes beyond its body (head and header section) are bounded by
// the format (see maxFileLen) to well under 2^23. Status is 100-999.
type indexEntry struct {
	sec  int64
	size int64
	bits uint64
}

const (
	ieNsecBits   = 30
	ieStatusBits = 10
	ieExtraBits  = 23
	ieStatusAt   = ieNsecBits
	ieOnDiskAt   = ieStatusAt + ieStatusBits
	ieExtraAt    = ieOnDiskAt + 1
	ieExtraMax   = 1<<ieExtraBits - 1
)

// newIndexEntry packs an entry's metadata. fileSize counts only when onDisk.
func newIndexEntry(status int, renderedAt time.Time, size, fileSize int64, onDisk bool) indexEntry {
	ie := indexEntry{
		sec:  renderedAt.Unix(),
		size: size,
		bits: uint64(renderedAt.Nanosecond()) | uint64(status&(1<<ieStatusBits-1))<<ieStatusAt,
	}
	if onDisk {
		// Clamped only for a size the format cannot produce; the disk-bytes
		// counter stays consistent either way (it adds and subtracts fileSize()).
		extra := min(max(fileSize-size, 0), ieExtraMax)
		ie.bits |= 1<<ieOnDiskAt | uint64(extra)<<ieExtraAt
	}
	return ie
}

func (ie indexEntry) status() int { return int(ie.bits >> ieStatusAt & (1<<ieStatusBits - 1)) }

// onDisk is false for a memory-only entry (its disk write failed).
func (ie indexEntry) onDisk() bool { return ie.bits>>ieOnDiskAt&1 != 0 }

// fileSize is the entry's bytes on disk; 0 when !onDisk.
func (ie indexEntry) fileSize() int64 {
	if !ie.onDisk() {
		return 0
	}
	return ie.size + int64(ie.bits>>ieExtraAt)
}

func (ie indexEntry) renderedAt() time.Time {
	return time.Unix(ie.sec, int64(ie.bits&(1<<ieNsecBits-1))).UTC()
}

// meta builds the Meta Range reports for the key packed as ik.
func (ie indexEntry) meta(ik string) Meta {
	return Meta{Key: unpackKey(ik), Status: ie.status(), RenderedAt: ie.renderedAt(), Size: ie.size}
}

// shard is one slice of the key index, keyed by packKey's form. Its lock
// also orders everything that changes the key's file or memory copy, so a
// disk read can tell (by seq) whether what it read is still current.
//
// A tombstone marks a key whose file must not be read: it was deleted (or
// its latest Put could not reach the disk) and the file is waiting in the
// removal queue. Put clears it; the removal worker removes the file and the
// tombstone together, under the lock.
type shard struct {
	mu      sync.RWMutex
	entries keyIndex
	tombs   map[string]struct{}
	seq     uint64 // bumped by every change to a key's file, index entry or tombstone
	// purges is bumped by every Delete of a key in the shard and by every
	// DeleteFunc, whether or not anything matched: PutIf uses it to drop a
	// render that was started before a purge (see Generation).
	purges uint64
	_      [64]byte
}

func (s *Store) shardFor(h uint64) *shard { return &s.shards[h>>56] }

// setLocked records ie for the key packed as ik, keeping the counters right.
// sh.mu must be held.
func (s *Store) setLocked(sh *shard, ik string, ie indexEntry) {
	if old, ok := sh.entries.set(ik, ie); ok {
		s.diskBytes.Add(-old.fileSize())
	} else {
		s.entries.Add(1)
	}
	s.diskBytes.Add(ie.fileSize())
}

// dropLocked forgets the index entry of the key packed as ik and reports
// whether there was one. sh.mu must be held.
func (s *Store) dropLocked(sh *shard, ik string) bool {
	old, ok := sh.entries.del(ik)
	if !ok {
		return false
	}
	s.entries.Add(-1)
	s.diskBytes.Add(-old.fileSize())
	return true
}

// tombstoneLocked removes the key packed as ik from the index and the
// memory tier and tombstones it, so Get never reads its file again. The
// caller bumps sh.seq, queues the file with enqueueRemoval and calls
// s.mem.Wait once done (see Delete). sh.mu must be held.
func (s *Store) tombstoneLocked(sh *shard, ik string) {
	s.dropLocked(sh, ik)
	sh.tombs[ik] = struct{}{}
	s.mem.Del(hashKey(s.seed, unpackKey(ik)))
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

// enqueueRemoval queues the files of tombstoned keys (in packKey's form)
// for the removal worker.
func (s *Store) enqueueRemoval(iks ...string) {
	if len(iks) == 0 {
		return
	}
	s.rmMu.Lock()
	s.rmQueue = append(s.rmQueue, iks...)
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
		for _, ik := range batch {
			s.removeTombstoned(ik)
		}
	}
}

// removeTombstoned removes the file of the key packed as ik if the key is
// still tombstoned. A Put since the tombstone owns the file now and cleared
// the tombstone.
func (s *Store) removeTombstoned(ik string) {
	k := unpackKey(ik)
	sh := s.shardFor(hashKey(s.seed, k))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.tombs[ik]; !ok {
		return
	}
	if err := os.Remove(entryPath(s.dir, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Keep the tombstone: the file stays unreadable through Get; a
		// restart will find and index it again, which is the best we can do.
		s.log.Warn("cachestore: remove entry file", "key", k.String(), "err", err)
		return
	}
	delete(sh.tombs, ik)
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
	var kb [128]byte
	pk := packKey(kb[:0], k)
	sh := s.shardFor(hashKey(s.seed, k))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.entries.get(string(pk)); ok {
		return // a Put or Get since start indexed a newer view
	}
	if _, ok := sh.tombs[string(pk)]; ok {
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
	s.setLocked(sh, string(pk), newIndexEntry(h.status, h.renderedAt, h.bodyLen, info.Size(), true))
	st.indexed++
}

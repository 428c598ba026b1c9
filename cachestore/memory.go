package cachestore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"

	"github.com/dgraph-io/ristretto/v2"
)

// memTier is the ristretto cache keyed by the 64-bit hash of a Key. Two keys
// with the same hash evict each other; a Get compares the stored entry's Key
// with the requested one, so a collision is a miss, never a wrong page.
type memTier = ristretto.Cache[uint64, *Entry]

// What an entry costs in Go memory beyond its bytes, measured with
// TestIndexMemory (go1.26, amd64): the Entry struct (a 128-byte size class),
// ristretto's bookkeeping per item (store slot, policy cost and counters:
// about 160 bytes), and the Header map (header plus one 8-slot group per 8
// names). An entry decoded from disk also keeps its whole file buffer (see
// entryCost's buf) and, measured, about diskReadOverhead more (separately
// allocated strings, size-class rounding).
const (
	entryOverhead     = 128 + 160
	headerMapOverhead = 48
	headerGroupCost   = 352
	diskReadOverhead  = 320
)

func newMemTier(maxBytes int64) (*memTier, error) {
	// About 10 counters per entry the tier can hold, assuming entries of
	// about 4 KiB; each counter costs about 3 bytes.
	counters := max(min(maxBytes/4096*10, 10_000_000), 1000)
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters:        counters,
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true, // cost is in bytes: entryCost includes the overhead
		KeyToHash:          func(h uint64) (uint64, uint64) { return h, 0 },
	})
	if err != nil {
		return nil, fmt.Errorf("cachestore: memory tier: %w", err)
	}
	return c, nil
}

// entryCost is what an entry costs the memory tier, in bytes. buf is the
// size of the buffer e.Body lives in when that is larger than the body (an
// entry read from disk keeps its whole file buffer), else 0.
func entryCost(e *Entry, buf int64) int64 {
	n := int64(len(e.Body)+len(e.Key.URL)+len(e.ETag)) + entryOverhead
	if buf > 0 {
		n += max(buf-int64(len(e.Body)), 0) + diskReadOverhead
	}
	if len(e.Header) > 0 {
		n += headerMapOverhead + int64((len(e.Header)+7)/8)*headerGroupCost
	}
	for name, vals := range e.Header {
		n += int64(len(name)) + 16
		for _, v := range vals {
			n += int64(len(v)) + 24
		}
	}
	return n
}

// hashKey hashes k without allocating. The seed is per Store, so hashes are
// not predictable from outside.
func hashKey(seed maphash.Seed, k Key) uint64 {
	x := maphash.String(seed, k.URL)
	x = mix64(x ^ uint64(int64(k.HostID))*0x9e3779b97f4a7c15)
	return mix64(x ^ uint64(int64(k.DimensionID))*0xc2b2ae3d27d4eb4f)
}

// mix64 is the MurmurHash3 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// etagOf returns the strong ETag Put assigns: a quoted prefix of the SHA-256
// of the stored (gzip) body. Identical stored bodies get identical ETags.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	var b [18]byte
	b[0] = '"'
	hex.Encode(b[1:17], sum[:8])
	b[17] = '"'
	return string(b[:])
}

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

// entryOverhead approximates the Go memory one Entry costs beyond its bytes
// (struct, header map, slice headers).
const entryOverhead = 256

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

// entryCost is what an entry costs the memory tier, in bytes.
func entryCost(e *Entry) int64 {
	n := len(e.Body) + len(e.Key.URL) + len(e.ETag) + entryOverhead
	for name, vals := range e.Header {
		n += len(name) + 16
		for _, v := range vals {
			n += len(v) + 16
		}
	}
	return int64(n)
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

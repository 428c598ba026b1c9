package cachestore

import (
	"math"
	"testing"
	"time"
)

func TestPackKeyRoundTrip(t *testing.T) {
	tests := []Key{
		{1, 1, "/"},
		{0, 0, "/a?b=1"},
		{-1, -7, "/neg"},
		{math.MaxInt, math.MinInt, "/extremes"},
		{300, 70000, "/\x00\xff/bytes"},
		{1, 2, ""},
	}
	seen := map[string]Key{}
	for _, k := range tests {
		t.Run(k.String(), func(t *testing.T) {
			ik := string(packKey(nil, k))
			if got := unpackKey(ik); got != k {
				t.Errorf("unpackKey(packKey(%v)) = %v", k, got)
			}
			if other, dup := seen[ik]; dup {
				t.Errorf("%v and %v pack alike", k, other)
			}
			seen[ik] = k
		})
	}
	// The URL must not be able to shift bytes into the ids.
	a, b := string(packKey(nil, Key{1, 12, "/x"})), string(packKey(nil, Key{1, 1, "2/x"}))
	if a == b {
		t.Error("different keys pack alike")
	}
}

func TestIndexEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name           string
		status         int
		at             time.Time
		size, fileSize int64
		onDisk         bool
		wantFile       int64
	}{
		{"on disk", 200, time.Date(2026, 3, 4, 5, 6, 7, 999_999_999, time.UTC), 635, 900, true, 900},
		{"memory only", 404, time.Date(2026, 3, 4, 5, 6, 7, 1, time.UTC), 10, 500, false, 0},
		{"status 999, big body", 999, time.Unix(0, 0).UTC(), 64 << 30, 64<<30 + maxFileLen(0), true, 64<<30 + maxFileLen(0)},
		{"status 100, far past", 100, time.Unix(-1<<40, 5).UTC(), 0, 68, true, 68},
		{"far future", 301, time.Unix(1<<50, 123).UTC(), 1, 69, true, 69},
		{"local time", 200, time.Date(2026, 1, 1, 0, 0, 0, 42, time.FixedZone("X", 3600)), 5, 70, true, 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ie := newIndexEntry(tt.status, tt.at, tt.size, tt.fileSize, tt.onDisk)
			if ie.status() != tt.status || ie.onDisk() != tt.onDisk || ie.fileSize() != tt.wantFile ||
				!ie.renderedAt().Equal(tt.at) || ie.size != tt.size {
				t.Errorf("got status %d onDisk %v fileSize %d at %v size %d", ie.status(), ie.onDisk(), ie.fileSize(), ie.renderedAt(), ie.size)
			}
			k := Key{3, 4, "/m"}
			m := ie.meta(string(packKey(nil, k)))
			if m.Key != k || m.Status != tt.status || !m.RenderedAt.Equal(tt.at) || m.Size != tt.size {
				t.Errorf("meta = %+v", m)
			}
		})
	}
}

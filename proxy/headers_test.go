package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLastModifiedRemembered(t *testing.T) {
	v := newHeaderValues(nil)
	base := time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("x", 3600))
	// 256 s apart: the same slot, so each call must recompute.
	times := []time.Time{base, base.Add(256 * time.Second), base, base.Add(time.Second)}
	for _, tm := range times {
		for range 2 {
			got := v.lastModified(tm)
			if want := tm.UTC().Format(http.TimeFormat); len(got) != 1 || got[0] != want {
				t.Errorf("lastModified(%v) = %v, want [%s]", tm, got, want)
			}
		}
	}
}

func TestContentLengthRemembered(t *testing.T) {
	v := newHeaderValues(nil)
	// 256 apart: the same slot, so each call must recompute.
	for _, n := range []uint64{12920, 12920 + 256, 0, 12920, 74433, 1 << 40} {
		for range 2 {
			if got, want := v.contentLength(n), strconv.FormatUint(n, 10); len(got) != 1 || got[0] != want {
				t.Errorf("contentLength(%d) = %v, want [%s]", n, got, want)
			}
		}
	}
}

func TestETagRemembered(t *testing.T) {
	v := newHeaderValues(nil)
	long := `"` + strings.Repeat("a", maxRememberedETag) + `"`
	tags := []string{`"bacb4ff2a8f740cd"`, `W/"x"`, `"bacb4ff2a8f740cd"`, long, `""`}
	for i := range 300 { // more tags than slots: collisions must recompute
		tags = append(tags, fmt.Sprintf(`"%016x"`, i))
	}
	for _, tag := range append(tags, tags...) {
		if got := v.etag(tag); len(got) != 1 || got[0] != tag {
			t.Errorf("etag(%s) = %v, want [%s]", tag, got, tag)
		}
	}
}

package proxy

import (
	"net/http"
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

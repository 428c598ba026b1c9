package negotiate

import "testing"

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"identity"}, false},
		{[]string{"br"}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"deflate, gzip;q=0.5"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.0"}, false},
		{[]string{"gzip;q=bogus"}, false},
		{[]string{"gzip;q=-1"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"br, *;q=0.1"}, true},
		{[]string{"gzip;q=0, *"}, false}, // gzip named: its own q-value rules
		{[]string{"gzip", "gzip;q=0"}, true},
		{[]string{"br", "gzip"}, true},
	} {
		if got := AcceptsGzip(tc.values); got != tc.want {
			t.Errorf("AcceptsGzip(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

// TestAcceptsGzipShortcut checks that the values AcceptsGzip answers without
// parsing parse to the same answer.
func TestAcceptsGzipShortcut(t *testing.T) {
	for _, v := range []string{"gzip", "gzip, deflate", "gzip, deflate, br", "gzip, deflate, br, zstd", "gzip,deflate", "gzip,deflate,br"} {
		if got, parsed := AcceptsGzip([]string{v}), parseGzip([]string{v}); got != parsed || !got {
			t.Errorf("AcceptsGzip(%q) = %v, parsed %v; want both true", v, got, parsed)
		}
	}
}

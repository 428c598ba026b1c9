// Package negotiate reads the content-negotiation headers PRISM's servers
// answer by: Accept-Encoding (the proxy's cached pages, the admin port's
// /metrics).
package negotiate

import (
	"strconv"
	"strings"
)

// AcceptsGzip reports whether the Accept-Encoding values allow gzip: listed
// as gzip or x-gzip with a q-value above zero, or covered by "*" with one.
func AcceptsGzip(values []string) bool {
	if len(values) == 1 {
		// What crawlers and browsers send, answered without parsing.
		switch values[0] {
		case "gzip", "gzip, deflate", "gzip, deflate, br", "gzip, deflate, br, zstd", "gzip,deflate", "gzip,deflate,br":
			return true
		}
	}
	return parseGzip(values)
}

// parseGzip is AcceptsGzip without the shortcut.
func parseGzip(values []string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(item, ";")
			name = strings.TrimSpace(name)
			q := 1.0
			for params != "" {
				var param string
				param, params, _ = strings.Cut(params, ";")
				pk, pv, _ := strings.Cut(param, "=")
				if strings.EqualFold(strings.TrimSpace(pk), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(pv), 64)
					if err != nil || f < 0 {
						f = 0
					}
					q = f
				}
			}
			switch {
			case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
				gzipQ = max(gzipQ, q)
			case name == "*":
				starQ = max(starQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}

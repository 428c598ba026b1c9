package fill

import (
	"fmt"
	"html"
	"os"
	"strings"
	"testing"
)

// BenchmarkGzip compresses a rendered-page-like document (the project's
// README as HTML paragraphs, about 50 KB) as a render's cache entry is;
// it reports the compressed size as a fraction of the input.
func BenchmarkGzip(b *testing.B) {
	md, err := os.ReadFile("../README.md")
	if err != nil {
		b.Skip(err)
	}
	var doc strings.Builder
	doc.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Docs</title></head><body><main class="content">`)
	for i, line := range strings.Split(string(md), "\n") {
		fmt.Fprintf(&doc, `<p class="para" id="p-%d">%s</p>`+"\n", i, html.EscapeString(line))
	}
	doc.WriteString(`</main></body></html>`)
	in := []byte(doc.String())
	p := &Pipeline{}
	b.SetBytes(int64(len(in)))
	var out []byte
	for b.Loop() {
		if out, err = p.gzip(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(out))/float64(len(in)), "ratio")
}

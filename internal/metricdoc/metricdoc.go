// Package metricdoc keeps each metric family's type and one-line description
// next to its registration, and writes metrics in the Prometheus text format
// with a "# HELP" and a "# TYPE" line for every family.
//
// github.com/VictoriaMetrics/metrics writes metadata only behind a
// process-wide switch (metrics.ExposeMetadata) and, even then, HELP lines
// without any text. A Set here records the text at registration and adds
// the metadata itself when it writes, so nothing global is switched.
package metricdoc

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// The metric types a Set records.
const (
	typeCounter   = "counter"
	typeGauge     = "gauge"
	typeHistogram = "histogram"
	typeSummary   = "summary"
)

// family is what a family's metadata lines say.
type family struct {
	typ, help string
}

// Set is a metrics.Set whose families carry a type and a description.
// Register through Counter, Gauge and Histogram (each takes the help text
// with the name); the embedded Set's own constructors still work, but a
// family registered through them is written without HELP or TYPE.
//
// A nil *Set is valid: its constructors return working metrics that belong
// to no exported set (what a component built without metrics counts into).
// The zero Set is not usable; make one with NewSet. A Set is safe for
// concurrent use.
type Set struct {
	*metrics.Set

	mu  sync.Mutex
	doc map[string]family // by family name (the metric name without labels)
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{Set: metrics.NewSet(), doc: map[string]family{}}
}

// target is the metrics.Set a constructor registers in: a throwaway one
// for a nil Set.
func (s *Set) target(name, typ, help string) *metrics.Set {
	if s == nil {
		return metrics.NewSet()
	}
	fam := familyOf(name)
	s.mu.Lock()
	// The first registration's text stays: the same family registered by
	// two packages (GetOrCreate) must not flip between two texts.
	if _, ok := s.doc[fam]; !ok {
		s.doc[fam] = family{typ: typ, help: oneLine(help)}
	}
	s.mu.Unlock()
	return s.Set
}

// Counter returns the counter called name (labels included, as
// metrics.Set.GetOrCreateCounter takes it), registering it with help as
// its family's description on first use. A counter's name ends in _total.
func (s *Set) Counter(name, help string) *metrics.Counter {
	return s.target(name, typeCounter, help).GetOrCreateCounter(name)
}

// Gauge returns the gauge called name, read from f, registering it with
// help as its family's description on first use. A nil Set returns nil (a
// gauge nobody reads does nothing).
func (s *Set) Gauge(name, help string, f func() float64) *metrics.Gauge {
	if s == nil {
		return nil
	}
	return s.target(name, typeGauge, help).GetOrCreateGauge(name, f)
}

// Histogram returns the Prometheus histogram called name with the given
// bucket upper bounds (ascending; +Inf is implied), registering it with
// help as its family's description on first use. It is written as
// name_bucket{le="..."}, name_sum and name_count.
func (s *Set) Histogram(name, help string, upperBounds []float64) *metrics.PrometheusHistogram {
	return s.target(name, typeHistogram, help).GetOrCreatePrometheusHistogramExt(name, upperBounds)
}

// WritePrometheus writes every metric of s in the Prometheus text format,
// each family preceded by its HELP and TYPE lines. A nil Set writes
// nothing.
func (s *Set) WritePrometheus(w io.Writer) {
	if s == nil {
		return
	}
	var raw bytes.Buffer
	s.Set.WritePrometheus(&raw)
	s.mu.Lock()
	doc := make(map[string]family, len(s.doc))
	for k, v := range s.doc {
		doc[k] = v
	}
	s.mu.Unlock()
	annotate(w, raw.Bytes(), func(name string) (family, bool) {
		f, ok := doc[name]
		return f, ok
	}, nil)
}

// annotate copies the text-format lines in raw to w, dropping any comment
// lines and writing the HELP and TYPE lines of each family before its
// first sample. lookup gives a family's metadata by name; rename, when
// not nil, may give a sample's metric a new name. A sample whose family
// lookup does not know is copied without metadata.
//
// It relies on each family's samples being contiguous, which both
// metrics.Set.WritePrometheus (sorted by family) and the process metrics
// writer guarantee.
func annotate(w io.Writer, raw []byte, lookup func(string) (family, bool), rename func(string) string) {
	var out bytes.Buffer
	prev := ""
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		name, rest := splitName(string(line))
		if rename != nil {
			name = rename(name)
		}
		fam, f, ok := resolve(name, lookup)
		if ok && fam != prev {
			out.WriteString("# HELP " + fam + " " + f.help + "\n")
			out.WriteString("# TYPE " + fam + " " + f.typ + "\n")
		}
		prev = fam
		out.WriteString(name)
		out.WriteString(rest)
		out.WriteByte('\n')
	}
	w.Write(out.Bytes())
}

// resolve finds the family a sample's metric name belongs to: its own, or
// for the _bucket, _sum and _count series that of its histogram or summary.
func resolve(name string, lookup func(string) (family, bool)) (string, family, bool) {
	if f, ok := lookup(name); ok {
		return name, f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, suffix)
		if !found {
			continue
		}
		if f, ok := lookup(base); ok && (f.typ == typeHistogram || f.typ == typeSummary) {
			return base, f, true
		}
	}
	return name, family{}, false
}

// splitName cuts a sample line into its metric name and the rest (labels,
// value).
func splitName(line string) (name, rest string) {
	if i := strings.IndexAny(line, "{ "); i >= 0 {
		return line[:i], line[i:]
	}
	return line, ""
}

// familyOf is a registered name without its labels.
func familyOf(name string) string {
	if i := strings.IndexByte(name, '{'); i >= 0 {
		return name[:i]
	}
	return name
}

// oneLine escapes help for a HELP line (backslash and line feed, as the
// text format wants) after folding any whitespace run into one space.
func oneLine(help string) string {
	help = strings.Join(strings.Fields(help), " ")
	return strings.ReplaceAll(help, `\`, `\\`)
}

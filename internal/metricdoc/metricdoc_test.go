package metricdoc

import (
	"bytes"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/prismproxy/prism/internal/promcheck"
)

// parse checks text as Prometheus and promtool would, failing the test on
// any problem.
func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, errs := promcheck.Check(text)
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("in\n%s", text)
	}
	return fams
}

func TestSetWritesHelpAndType(t *testing.T) {
	s := NewSet()
	s.Counter(`prism_x_total{tier="memory"}`, "Lookups answered.").Add(2)
	s.Counter(`prism_x_total{tier="disk"}`, "ignored: the first text stays").Inc()
	s.Gauge(`prism_y`, "A level,\n  folded\tonto one line; a \\ kept.", func() float64 { return 7 })
	h := s.Histogram(`prism_z_seconds`, "How long.", []float64{0.1, 1})
	h.Update(0.05)
	h.Update(5)
	s.Histogram(`prism_w_seconds{kind="a"}`, "Labelled.", []float64{1}).Update(0.5)
	s.Histogram(`prism_w_seconds{kind="b"}`, "Labelled.", []float64{1})

	var b bytes.Buffer
	s.WritePrometheus(&b)
	fams := parse(t, b.String())

	want := map[string]struct {
		typ  dto.MetricType
		help string
		n    int
	}{
		"prism_x_total":   {dto.MetricType_COUNTER, "Lookups answered.", 2},
		"prism_y":         {dto.MetricType_GAUGE, `A level, folded onto one line; a \ kept.`, 1},
		"prism_z_seconds": {dto.MetricType_HISTOGRAM, "How long.", 1},
		"prism_w_seconds": {dto.MetricType_HISTOGRAM, "Labelled.", 2},
	}
	if len(fams) != len(want) {
		t.Errorf("families %d, want %d:\n%s", len(fams), len(want), b.String())
	}
	for name, w := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing:\n%s", name, b.String())
			continue
		}
		if f.GetType() != w.typ || f.GetHelp() != w.help || len(f.Metric) != w.n {
			t.Errorf("%s: type %v help %q series %d, want %v %q %d", name, f.GetType(), f.GetHelp(), len(f.Metric), w.typ, w.help, w.n)
		}
	}
	hz := fams["prism_z_seconds"].Metric[0].GetHistogram()
	if hz.GetSampleCount() != 2 || len(hz.Bucket) != 3 || hz.Bucket[0].GetCumulativeCount() != 1 {
		t.Errorf("histogram %v, want 2 samples, 1 under 0.1, +Inf", hz)
	}
	if !strings.Contains(b.String(), `prism_z_seconds_bucket{le="+Inf"} 2`) {
		t.Errorf("no +Inf bucket:\n%s", b.String())
	}
}

func TestNilSetCounts(t *testing.T) {
	var s *Set
	c := s.Counter("prism_a_total", "A.")
	c.Inc()
	if c.Get() != 1 {
		t.Errorf("counter %d, want 1", c.Get())
	}
	s.Histogram("prism_b_seconds", "B.", []float64{1}).Update(2)
	if g := s.Gauge("prism_c", "C.", func() float64 { return 1 }); g != nil {
		t.Errorf("nil Set's gauge %v, want nil", g)
	}
}

// TestProcessMetrics checks every family metrics.WriteProcessMetrics
// writes: each passes promcheck, with a description of its own (none from
// the fallback, so a family the library adds shows up here).
func TestProcessMetrics(t *testing.T) {
	var b bytes.Buffer
	WriteProcessMetrics(&b)
	fams := parse(t, b.String())
	if len(fams) < 40 {
		t.Fatalf("%d families, want the library's 60 or so:\n%s", len(fams), b.String())
	}
	for name, f := range fams {
		if f.Help == nil || f.GetHelp() == "" || strings.Contains(f.GetHelp(), "(github.com/VictoriaMetrics/metrics)") {
			t.Errorf("%s: help %q, want a description of its own", name, f.GetHelp())
		}
	}
	for _, name := range []string{"go_cgo_calls_count", "go_gc_forced_count", "go_cpu_count"} {
		if strings.Contains(b.String(), name) {
			t.Errorf("%s still written", name)
		}
	}
}

// Package promcheck holds a /metrics text to what Prometheus and promtool
// want of it. Only tests import it, so github.com/prometheus/common stays
// out of the prism binary.
package promcheck

import (
	"fmt"
	"math"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Check parses text with Prometheus's own text parser, which refuses what
// Prometheus would (metadata twice, a sample of the wrong type, a bad name
// or label), and returns its families with every problem found:
//   - a family without a HELP text or without exactly one TYPE line, or
//     untyped;
//   - a name breaking promtool's rules (counters end in _total and nothing
//     else does; _bucket, _count and _sum belong to histograms and
//     summaries; base units; snake_case);
//   - a histogram series whose buckets are not le buckets ending in +Inf,
//     or whose +Inf bucket differs from its _count.
//
// A parse error is the only problem returned when there is one.
func Check(text string) (map[string]*dto.MetricFamily, []error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, []error{fmt.Errorf("Prometheus text parser: %w", err)}
	}
	var errs []error
	declared := map[string]int{}
	hasCount := map[string]bool{}
	for line := range strings.SplitSeq(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ := strings.Cut(rest, " ")
			declared[name]++
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if base, ok := strings.CutSuffix(name, "_count"); ok {
			hasCount[base] = true
		}
		if strings.HasSuffix(name, "_bucket") && !strings.Contains(line, `le="`) {
			errs = append(errs, fmt.Errorf("bucket without le: %s", line))
		}
	}
	for name, f := range fams {
		help := strings.TrimSpace(f.GetHelp())
		if help == "" {
			errs = append(errs, fmt.Errorf("%s: no help text", name))
		}
		if declared[name] != 1 || f.GetType() == dto.MetricType_UNTYPED {
			errs = append(errs, fmt.Errorf("%s: %d TYPE lines, type %v; want one, not untyped", name, declared[name], f.GetType()))
		}
		for _, p := range lint(f) {
			errs = append(errs, fmt.Errorf("%s: %s", name, p))
		}
		if f.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range f.Metric {
			h := m.GetHistogram()
			b := h.GetBucket()
			if len(b) == 0 || !math.IsInf(b[len(b)-1].GetUpperBound(), 1) {
				errs = append(errs, fmt.Errorf("%s%v: buckets %v, want le buckets ending in +Inf", name, m.GetLabel(), b))
				continue
			}
			// The Go runtime's histograms have no _sum, hence (as
			// OpenMetrics wants) no _count either: buckets only.
			if hasCount[name] && b[len(b)-1].GetCumulativeCount() != h.GetSampleCount() {
				errs = append(errs, fmt.Errorf("%s%v: +Inf bucket %d, _count %d", name, m.GetLabel(), b[len(b)-1].GetCumulativeCount(), h.GetSampleCount()))
			}
		}
	}
	return fams, errs
}

// lint applies the rules of promtool check metrics that a family's name
// and type can break (its "no help text" rule is Check's).
func lint(f *dto.MetricFamily) []string {
	var p []string
	name, typ := f.GetName(), f.GetType()
	total := strings.HasSuffix(name, "_total")
	switch {
	case typ == dto.MetricType_COUNTER && !total:
		p = append(p, `counter metrics should have "_total" suffix`)
	case typ != dto.MetricType_COUNTER && total:
		p = append(p, `non-counter metrics should not have "_total" suffix`)
	}
	if typ != dto.MetricType_HISTOGRAM && typ != dto.MetricType_SUMMARY {
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			if strings.HasSuffix(name, s) {
				p = append(p, `non-histogram and non-summary metrics should not have "`+s+`" suffix`)
			}
		}
	}
	for _, unit := range []string{"milliseconds", "microseconds", "nanoseconds", "minutes", "hours", "days", "kilobytes", "megabytes"} {
		if strings.Contains(name, "_"+unit) {
			p = append(p, "use base unit seconds or bytes instead of "+unit)
		}
	}
	if name != strings.ToLower(name) {
		p = append(p, "metric names should be written in snake_case")
	}
	return p
}

package promcheck

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	const good = `# HELP a_total Things.
# TYPE a_total counter
a_total{k="x"} 1
a_total{k="y"} 2
# HELP b_seconds Time.
# TYPE b_seconds histogram
b_seconds_bucket{le="0.1"} 1
b_seconds_bucket{le="+Inf"} 2
b_seconds_sum 3
b_seconds_count 2
# HELP c_seconds Runtime histogram: buckets only.
# TYPE c_seconds histogram
c_seconds_bucket{le="1"} 4
c_seconds_bucket{le="+Inf"} 5
# HELP d Level.
# TYPE d gauge
d 3
`
	if fams, errs := Check(good); len(errs) != 0 || len(fams) != 4 {
		t.Fatalf("good text: %d families, problems %v", len(fams), errs)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"no help", "# TYPE a gauge\na 1\n", "no help text"},
		{"help without text", "# HELP a\n# TYPE a gauge\na 1\n", "no help text"},
		{"no type", "# HELP a A.\na 1\n", "0 TYPE lines"},
		{"untyped", "# HELP a A.\n# TYPE a untyped\na 1\n", "not untyped"},
		{"counter without _total", "# HELP a A.\n# TYPE a counter\na 1\n", `should have "_total"`},
		{"gauge with _total", "# HELP a_total A.\n# TYPE a_total gauge\na_total 1\n", `should not have "_total"`},
		{"gauge with _count", "# HELP a_count A.\n# TYPE a_count gauge\na_count 1\n", `"_count" suffix`},
		{"milliseconds", "# HELP a_milliseconds A.\n# TYPE a_milliseconds gauge\na_milliseconds 1\n", "base unit"},
		{"vmrange buckets", "# HELP h_seconds H.\n# TYPE h_seconds histogram\n" +
			`h_seconds_bucket{vmrange="1.0e-01...1.2e-01"} 1` + "\nh_seconds_sum 0.11\nh_seconds_count 1\n", "without le"},
		{"count differs", "# HELP h_seconds H.\n# TYPE h_seconds histogram\n" +
			`h_seconds_bucket{le="+Inf"} 2` + "\nh_seconds_sum 1\nh_seconds_count 3\n", "_count 3"},
		{"metadata twice", "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\na 2\n", "parser"},
		{"not text format", "a{ 1\n", "parser"},
	} {
		_, errs := Check(tc.text)
		if len(errs) == 0 {
			t.Errorf("%s: no problem found in\n%s", tc.name, tc.text)
			continue
		}
		all := ""
		for _, e := range errs {
			all += e.Error() + "\n"
		}
		if !strings.Contains(all, tc.want) {
			t.Errorf("%s: problems\n%s want one with %q", tc.name, all, tc.want)
		}
	}
}

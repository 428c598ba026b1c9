package e2e

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/prismproxy/prism/internal/promcheck"
	"github.com/prismproxy/prism/internal/redistest"
)

// scrape GETs the admin /metrics as a Prometheus scraper does, with the
// given Accept-Encoding ("" sends none), and returns the response and its
// body as sent (still compressed when it is).
func (p *Prism) scrape(acceptEncoding string) (*http.Response, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.AdminURL+"/metrics", nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Conf.AdminToken)
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	// noRedirect's transport does not ask for gzip nor decode it.
	resp, err := noRedirect.Do(req)
	if err != nil {
		p.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("GET /metrics: read: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("GET /metrics = %d: %s", resp.StatusCode, b)
	}
	return resp, b
}

// TestMetricsPrometheus scrapes a real instance, with every component
// wired (Redis too when redis-server is installed, so that the cluster's
// families are there), as Prometheus does: the text parses with
// Prometheus's own parser, every family has a HELP text and a TYPE, the
// histograms have le buckets up to +Inf, the names follow promtool's rules,
// and the body is gzipped when the scraper asks for it.
func TestMetricsPrometheus(t *testing.T) {
	o := newOrigin(t)
	c := newConf(t, o.URL)
	c.SchedulerControl = true
	clustered := false
	if _, err := exec.LookPath("redis-server"); err == nil {
		redis := redistest.Start(t, "--appendonly", "yes", "--maxmemory-policy", "noeviction")
		c.Redis, c.NodeID = redis.URL(), "metrics-node"
		clustered = true
	} else {
		t.Log("redis-server not installed: scraping without [cluster] (prism_cluster_* not checked)")
	}
	p := startPrism(t, c)

	// A render (MISS), answers from the cache (HIT) and a person's page
	// (pass), so that the histograms have samples.
	for i, want := range []string{"MISS", "HIT", "HIT"} {
		if got := p.cacheState("/metrics-page", desktopBot); got != want {
			t.Fatalf("request %d: X-Prism-Cache %q, want %q", i, got, want)
		}
	}
	if r := p.Get("/person", person); r.Status != http.StatusOK {
		t.Fatalf("person's request = %d", r.Status)
	}

	resp, plain := p.scrape("")
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("no Accept-Encoding: Content-Encoding %q, want none", ce)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q, want the text format 0.0.4", ct)
	}
	text := string(plain)
	fams := parseMetrics(t, text)

	wantFams := []string{
		"prism_requests_total", "prism_proxy_hit_seconds", "prism_proxy_render_seconds", "prism_proxy_panics_total", // proxy, fill
		"prism_cache_hits_total", "prism_cache_entries", "prism_cache_index_ready", // cachestore
		"prism_render_total", "prism_render_duration_seconds", "prism_browser_up", // prerender
		"prism_recache_renders_total", "prism_recache_paused", "prism_recache_queue_size", // recache
		"prism_uptime_seconds", "prism_pool_size", // adminapi
		"go_goroutines", "go_gc_duration_seconds", "go_sched_latencies_seconds", "process_resident_memory_bytes", // runtime
	}
	if clustered {
		wantFams = append(wantFams, "prism_cluster_redis_up", "prism_cluster_lock_total", "prism_cluster_shared_total", "prism_cluster_purge_lag_seconds")
	}
	for _, name := range wantFams {
		if fams[name] == nil {
			t.Errorf("family %s not exported", name)
		}
	}
	for _, name := range []string{"prism_render_duration_seconds", "prism_proxy_render_seconds", "prism_proxy_hit_seconds"} {
		f := fams[name]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.Metric) == 0 {
			t.Errorf("%s: %v, want a histogram", name, f)
			continue
		}
		if n := f.Metric[0].GetHistogram().GetSampleCount(); n == 0 {
			t.Errorf("%s: no samples after a render and two hits", name)
		}
	}
	// The render finished in its histogram's range: some bucket below +Inf
	// counted it (the buckets are chosen for renders, not the library's).
	if f := fams["prism_render_duration_seconds"]; f != nil && len(f.Metric) > 0 {
		b := f.Metric[0].GetHistogram().GetBucket()
		if len(b) < 2 || b[0].GetUpperBound() != 0.05 || b[len(b)-2].GetUpperBound() != 30 || b[len(b)-2].GetCumulativeCount() == 0 {
			t.Errorf("prism_render_duration_seconds buckets %v, want 0.05 ... 30, +Inf with the render counted", b)
		}
	}
	if strings.Contains(text, "vmrange") {
		t.Error("a vmrange bucket is still written")
	}

	t.Run("gzip", func(t *testing.T) {
		for _, ae := range []string{"gzip", "deflate, gzip;q=0.8", "*"} {
			resp, body := p.scrape(ae)
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Errorf("Accept-Encoding %q: Content-Encoding %q, want gzip", ae, resp.Header.Get("Content-Encoding"))
				continue
			}
			if !slices.Contains(resp.Header.Values("Vary"), "Accept-Encoding") {
				t.Errorf("Accept-Encoding %q: Vary %q, want Accept-Encoding", ae, resp.Header.Values("Vary"))
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("Accept-Encoding %q: not gzip: %v", ae, err)
			}
			unz, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("Accept-Encoding %q: gunzip: %v", ae, err)
			}
			if len(body) >= len(unz) {
				t.Errorf("Accept-Encoding %q: %d bytes for %d of text, want fewer", ae, len(body), len(unz))
			}
			got := parseMetrics(t, string(unz))
			for name := range fams {
				if got[name] == nil {
					t.Errorf("Accept-Encoding %q: family %s missing from the gzipped scrape", ae, name)
				}
			}
		}
		for _, ae := range []string{"identity", "gzip;q=0", "br"} {
			resp, body := p.scrape(ae)
			if ce := resp.Header.Get("Content-Encoding"); ce != "" || !bytes.HasPrefix(body, []byte("# HELP ")) {
				t.Errorf("Accept-Encoding %q: Content-Encoding %q, body %.40q; want plain text", ae, ce, body)
			}
		}
	})

	t.Run("promtool", func(t *testing.T) {
		bin, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not on PATH: `promtool check metrics` not run (the checks above apply its naming rules)")
		}
		cmd := exec.Command(bin, "check", "metrics")
		cmd.Stdin = bytes.NewReader(plain)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

// parseMetrics checks text with promcheck (Prometheus's parser, HELP and
// TYPE for every family, le buckets, promtool's naming rules), failing the
// test on any problem.
func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, errs := promcheck.Check(text)
	for _, err := range errs {
		t.Error(err)
	}
	if fams == nil {
		t.FailNow()
	}
	return fams
}

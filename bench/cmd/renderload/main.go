// Command renderload drives PRISM's render path: C crawlers ask for unique
// URLs (so every request is a MISS) for a fixed time and the program prints
// renders/s, the p50 and p90 latency of a render (request sent to body
// read) and how many responses were complete renders.
//
// A response counts as a render when it says X-Prism-Cache: MISS with status
// 200, and as complete when its body also holds the marker.
//
// With C above the tab count (bench/run.sh uses 2 x tabs, so that a tab
// never waits for the next request) a request's latency includes its wait
// for a tab. -lat-c N (the tab count) adds a second phase of -lat-duration
// with N crawlers, one per tab, whose latencies are a render's own: p50_ms
// and p90_ms then come from that phase (load_p50_ms and load_p90_ms are the
// first phase's), and lat_renders= and lat_complete= count its renders.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prismproxy/prism/bench/internal/stats"
)

func main() {
	target := flag.String("url", "", "PRISM public base URL (required)")
	host := flag.String("host", "site.test", "Host header (a configured host name)")
	ua := flag.String("ua", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler User-Agent")
	conc := flag.Int("c", 4, "concurrent crawlers")
	warm := flag.Int("warmup", 2, "renders before measuring, all at once (give the tab count)")
	dur := flag.Duration("duration", 8*time.Second, "measuring time")
	marker := flag.String("marker", `data-items="200"`, "string a complete render contains")
	tag := flag.String("tag", "", "label printed with the result")
	latC := flag.Int("lat-c", 0, "crawlers of a second, latency phase (0: none; give the tab count)")
	latDur := flag.Duration("lat-duration", 4*time.Second, "length of the latency phase")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "renderload: -url is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *target, *host, *ua, *marker, *tag, *conc, *warm, *dur, *latC, *latDur); err != nil {
		fmt.Fprintln(os.Stderr, "renderload:", err)
		os.Exit(1)
	}
}

type result struct {
	render, complete bool
	state            string
}

func run(ctx context.Context, target, host, ua, marker, tag string, conc, warm int, dur time.Duration, latC int, latDur time.Duration) error {
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conc + 1, DisableCompression: false},
	}
	var seq atomic.Int64
	run0 := time.Now().UnixNano()
	get := func(ctx context.Context) (result, error) {
		u := fmt.Sprintf("%s/p/load-%d-%d", target, run0, seq.Add(1))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return result{}, err
		}
		req.Host = host
		req.Header.Set("User-Agent", ua)
		resp, err := client.Do(req)
		if err != nil {
			return result{}, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return result{}, err
		}
		st := resp.Header.Get("X-Prism-Cache")
		r := result{state: st, render: st == "MISS" && resp.StatusCode == http.StatusOK}
		r.complete = r.render && strings.Contains(string(body), marker)
		return r, nil
	}
	// Warm-up renders run at once, so that with -warmup = tabs every tab
	// of PRISM's pool exists (and its renderer process has started) before
	// the measurement, as rodloop opens and warms every page first.
	warmErrs := make(chan error, warm)
	for range warm {
		go func() {
			_, err := get(ctx)
			warmErrs <- err
		}()
	}
	for range warm {
		if err := <-warmErrs; err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	p := phase(ctx, get, conc, dur)
	n := p.renders
	p50, p90 := stats.Percentile(p.lats, 50), stats.Percentile(p.lats, 90)
	extra := ""
	if latC > 0 {
		l := phase(ctx, get, latC, latDur)
		extra = fmt.Sprintf(" load_p50_ms=%.1f load_p90_ms=%.1f lat_c=%d lat_renders=%d lat_complete=%d lat_other=%d lat_failed=%d",
			stats.MS(p50), stats.MS(p90), latC, l.renders, l.complete, l.other, l.failed)
		p50, p90 = stats.Percentile(l.lats, 50), stats.Percentile(l.lats, 90)
		for k, v := range l.states {
			p.states[k] += v
		}
	}
	// renders=, complete=, other=, failed= and rps= are the first phase's.
	fmt.Printf("renderload %s c=%d renders=%d complete=%d other=%d failed=%d seconds=%.2f rps=%.2f p50_ms=%.1f p90_ms=%.1f%s states=%v\n",
		tag, conc, n, p.complete, p.other, p.failed, p.seconds, float64(n)/p.seconds, stats.MS(p50), stats.MS(p90), extra, p.states)
	return nil
}

type phaseResult struct {
	renders, complete, other, failed int64
	seconds                          float64
	lats                             []time.Duration // of the renders
	states                           map[string]int  // X-Prism-Cache of the others
}

// phase runs conc crawlers for dur.
func phase(ctx context.Context, get func(context.Context) (result, error), conc int, dur time.Duration) phaseResult {
	var renders, complete, other, failed atomic.Int64
	var mu sync.Mutex
	states := map[string]int{}
	var lats []time.Duration
	mctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for mctx.Err() == nil {
				// Requests still running at the deadline finish (and count
				// toward the elapsed time) rather than being cut off.
				t0 := time.Now()
				r, err := get(ctx)
				d := time.Since(t0)
				switch {
				case err != nil:
					failed.Add(1)
				case r.render:
					renders.Add(1)
					if r.complete {
						complete.Add(1)
					}
					mu.Lock()
					lats = append(lats, d)
					mu.Unlock()
				default:
					other.Add(1)
					mu.Lock()
					states[r.state]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return phaseResult{renders.Load(), complete.Load(), other.Load(), failed.Load(), time.Since(start).Seconds(), lats, states}
}

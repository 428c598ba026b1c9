// Command renderload drives PRISM's render path: C crawlers ask for unique
// URLs (so every request is a MISS) for a fixed time and the program prints
// renders/s and how many responses were complete renders.
//
// A response counts as a render when it says X-Prism-Cache: MISS with status
// 200, and as complete when its body also holds the marker.
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
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "renderload: -url is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *target, *host, *ua, *marker, *tag, *conc, *warm, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "renderload:", err)
		os.Exit(1)
	}
}

type result struct {
	render, complete bool
	state            string
}

func run(ctx context.Context, target, host, ua, marker, tag string, conc, warm int, dur time.Duration) error {
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

	var renders, complete, other, failed atomic.Int64
	var mu sync.Mutex
	states := map[string]int{}
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
				r, err := get(ctx)
				switch {
				case err != nil:
					failed.Add(1)
				case r.render:
					renders.Add(1)
					if r.complete {
						complete.Add(1)
					}
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
	el := time.Since(start)
	n := renders.Load()
	fmt.Printf("renderload %s c=%d renders=%d complete=%d other=%d failed=%d seconds=%.2f rps=%.2f states=%v\n",
		tag, conc, n, complete.Load(), other.Load(), failed.Load(), el.Seconds(), float64(n)/el.Seconds(), states)
	return nil
}

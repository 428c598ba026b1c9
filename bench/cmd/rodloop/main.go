// Command rodloop is the render baseline: a bare go-rod loop rendering the
// jsorigin page at unique URLs with N reused tabs for a fixed time, waiting
// for window.prerenderReady like PRISM does. It prints renders/s and how many
// renders were complete (the script's content present).
//
// It isolates nothing between renders and does no post-processing: it is
// the ceiling a prerendering proxy built on rod can approach.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-rod/rod"
	"github.com/go-rod/rod/lib/launcher"
	"github.com/go-rod/rod/lib/proto"
)

const readyJS = `() => new Promise(r => { const t0 = Date.now(); (function c() {
	if (window.prerenderReady === true) return r(true);
	if (Date.now() - t0 > 14000) return r(false);
	setTimeout(c, 10); })(); })`

func main() {
	base := flag.String("url", "", "origin base URL (required), e.g. http://127.0.0.1:3000")
	tabs := flag.Int("tabs", 1, "tabs rendering in parallel")
	dur := flag.Duration("duration", 8*time.Second, "measuring time (after one warm-up render per tab)")
	chrome := flag.String("chrome", "/usr/lib/chromium/chromium", "Chromium binary")
	marker := flag.String("marker", `data-items="200"`, "string a complete render contains")
	flag.Parse()
	if *base == "" {
		fmt.Fprintln(os.Stderr, "rodloop: -url is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *base, *chrome, *marker, *tabs, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "rodloop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, base, chrome, marker string, tabs int, dur time.Duration) error {
	dir, err := os.MkdirTemp("", "rodloop-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l := launcher.New().Bin(chrome).Headless(true).NoSandbox(true).Leakless(true).UserDataDir(dir).
		Set("no-first-run").Set("disable-background-networking").Set("disable-component-update").
		Set("disable-sync").Set("disable-quic").Set("disable-gpu").Set("disable-dev-shm-usage").
		Set("disable-extensions").Set("mute-audio").Set("hide-scrollbars").
		Set("disable-background-timer-throttling").Set("disable-renderer-backgrounding").
		Set("disable-backgrounding-occluded-windows")
	u, err := l.Launch()
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer l.Cleanup()
	defer l.Kill()
	b := rod.New().ControlURL(u).NoDefaultDevice().Context(ctx)
	if err := b.Connect(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer b.Close()

	var seq atomic.Int64
	render := func(p *rod.Page) (bool, error) {
		i := seq.Add(1)
		tp := p.Timeout(15 * time.Second)
		defer tp.CancelTimeout()
		if err := tp.Navigate(fmt.Sprintf("%s/p/rod-%d-%d", base, time.Now().UnixNano(), i)); err != nil {
			return false, err
		}
		if _, err := tp.Evaluate(rod.Eval(readyJS).ByPromise()); err != nil {
			return false, err
		}
		html, err := tp.HTML()
		if err != nil {
			return false, err
		}
		return strings.Contains(html, marker), nil
	}

	pages := make([]*rod.Page, tabs)
	for i := range pages {
		if pages[i], err = b.Page(proto.TargetCreateTarget{URL: "about:blank"}); err != nil {
			return fmt.Errorf("new tab: %w", err)
		}
		if _, err := render(pages[i]); err != nil { // warm-up
			return fmt.Errorf("warm-up render: %w", err)
		}
	}

	var done, complete, failed atomic.Int64
	var lat sync.Mutex
	var total time.Duration
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range pages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				ok, err := render(p)
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
				if ok {
					complete.Add(1)
				}
				lat.Lock()
				total += time.Since(t0)
				lat.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	n := done.Load()
	mean := time.Duration(0)
	if n > 0 {
		mean = total / time.Duration(n)
	}
	// One machine-readable line for bench/run.sh.
	fmt.Printf("rodloop tabs=%d renders=%d complete=%d failed=%d seconds=%.2f rps=%.2f mean_ms=%d\n",
		tabs, n, complete.Load(), failed.Load(), el.Seconds(), float64(n)/el.Seconds(), mean.Milliseconds())
	return nil
}

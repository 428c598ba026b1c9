// Command rodloop is the render baseline: a bare go-rod loop rendering the
// jsorigin page at unique URLs with N reused tabs for a fixed time. By
// default it waits for window.prerenderReady like PRISM does; with
// -wait-selector it waits instead until an element matching the selector is
// in the DOM (a MutationObserver, so it knows the moment the page is done:
// the best a renderer that knew each page's completion marker could do). It
// prints renders/s, p50 and p90 render latency (navigation to HTML in hand)
// and how many renders were complete (the marker string in the HTML).
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

	"github.com/prismproxy/prism/bench/internal/stats"
)

// readyJS polls window.prerenderReady every 10 ms. Both scripts answer
// "other" when they run in a document other than the one navigated to (so a
// wait can never end on the previous render's document).
const readyJS = `(want) => new Promise(r => { const t0 = Date.now(); (function c() {
	if (location.href !== want) return r('other');
	if (window.prerenderReady === true) return r('done');
	if (Date.now() - t0 > 14000) return r('timeout');
	setTimeout(c, 10); })(); })`

// selectorJS waits until document.querySelector(sel) matches, checked at
// once and after every DOM mutation.
const selectorJS = `(want, sel) => new Promise(r => {
	if (location.href !== want) return r('other');
	const ok = () => document.querySelector(sel) !== null;
	if (ok()) return r('done');
	let t;
	const mo = new MutationObserver(() => { if (ok()) { mo.disconnect(); clearTimeout(t); r('done'); } });
	mo.observe(document, {childList: true, subtree: true, attributes: true});
	t = setTimeout(() => { mo.disconnect(); r('timeout'); }, 14000);
})`

func main() {
	base := flag.String("url", "", "origin base URL (required), e.g. http://127.0.0.1:3000")
	tabs := flag.Int("tabs", 1, "tabs rendering in parallel")
	dur := flag.Duration("duration", 8*time.Second, "measuring time (after one warm-up render per tab)")
	chrome := flag.String("chrome", "/usr/lib/chromium/chromium", "Chromium binary")
	marker := flag.String("marker", `data-items="200"`, "string a complete render contains")
	sel := flag.String("wait-selector", "", "wait for an element matching this CSS selector instead of window.prerenderReady")
	noCache := flag.Bool("no-cache", false, "turn the browser cache off in every tab, as PRISM does (a diagnostic: the bench's baseline keeps it on)")
	flag.Parse()
	if *base == "" {
		fmt.Fprintln(os.Stderr, "rodloop: -url is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *base, *chrome, *marker, *sel, *tabs, *dur, *noCache); err != nil {
		fmt.Fprintln(os.Stderr, "rodloop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, base, chrome, marker, sel string, tabs int, dur time.Duration, noCache bool) error {
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
		u := fmt.Sprintf("%s/p/rod-%d-%d", base, time.Now().UnixNano(), i)
		if err := tp.Navigate(u); err != nil {
			return false, err
		}
		wait := rod.Eval(readyJS, u).ByPromise()
		if sel != "" {
			wait = rod.Eval(selectorJS, u, sel).ByPromise()
		}
		for {
			res, err := tp.Evaluate(wait)
			if err != nil {
				return false, err
			}
			if res.Value.Str() != "other" {
				break
			}
			time.Sleep(2 * time.Millisecond) // the new document is not there yet
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
		if noCache {
			if err := (proto.NetworkEnable{}).Call(pages[i]); err != nil {
				return fmt.Errorf("network: %w", err)
			}
			if err := (proto.NetworkSetCacheDisabled{CacheDisabled: true}).Call(pages[i]); err != nil {
				return fmt.Errorf("cache off: %w", err)
			}
		}
		if _, err := render(pages[i]); err != nil { // warm-up
			return fmt.Errorf("warm-up render: %w", err)
		}
	}

	var done, complete, failed atomic.Int64
	var lat sync.Mutex
	var total time.Duration
	var lats []time.Duration
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
				d := time.Since(t0)
				lat.Lock()
				total += d
				lats = append(lats, d)
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
	wait := "prerenderReady"
	if sel != "" {
		wait = "selector"
	}
	fmt.Printf("rodloop tabs=%d wait=%s renders=%d complete=%d failed=%d seconds=%.2f rps=%.2f mean_ms=%d p50_ms=%.1f p90_ms=%.1f\n",
		tabs, wait, n, complete.Load(), failed.Load(), el.Seconds(), float64(n)/el.Seconds(), mean.Milliseconds(),
		stats.MS(stats.Percentile(lats, 50)), stats.MS(stats.Percentile(lats, 90)))
	return nil
}

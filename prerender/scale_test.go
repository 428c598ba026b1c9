package prerender

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-rod/rod"
	"github.com/go-rod/rod/lib/launcher"
	"github.com/go-rod/rod/lib/proto"
)

// scalePage is a JavaScript page like bench/cmd/jsorigin's: ~50 KB of
// markup whose content is written by script after a fetch, with
// prerenderReady. A complete render holds scaleMarker.
func scalePage() string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Bench</title><script>window.prerenderReady = false;</script>
<style>body{font-family:sans-serif}li{margin:2px}</style></head><body><main><div id="app">Loading</div>
`)
	for i := range 12 {
		fmt.Fprintf(&b, "<section><h2>Section %d</h2><p>%s</p></section>\n", i, strings.Repeat("lorem ipsum dolor sit amet ", 65))
	}
	b.WriteString(`</main><script>
(async function () {
  const items = await (await fetch('/api/items')).json();
  const ul = document.createElement('ul');
  for (const it of items) { const li = document.createElement('li'); li.innerHTML = '<a href="/p/' + it.id + '">' + it.name + '</a>'; ul.appendChild(li); }
  const app = document.getElementById('app'); app.textContent = ''; app.appendChild(ul);
  const d = document.createElement('div'); d.id = 'bench-complete'; d.setAttribute('data-items', String(ul.children.length)); app.appendChild(d);
  window.prerenderReady = true;
})();
</script></body></html>`)
	return b.String()
}

const scaleMarker = `data-items="200"`

func scaleOrigin() *httptest.Server {
	page := scalePage()
	if os.Getenv("PRISM_SCALE_NOFLAG") != "" { // the done-detection's page: no flag, a marker
		page = strings.NewReplacer("window.prerenderReady = false;", "", "window.prerenderReady = true;", "").Replace(page)
	}
	var api strings.Builder
	api.WriteByte('[')
	for i := range 200 {
		if i > 0 {
			api.WriteByte(',')
		}
		fmt.Fprintf(&api, `{"id":"item-%d","name":"Item %d %s"}`, i, i, strings.Repeat("x", 60))
	}
	api.WriteByte(']')
	apiBody := api.String()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/items" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, apiBody)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	}))
}

type scaleResult struct {
	renders, complete, failed int64
	dur                       time.Duration
	cpu                       time.Duration
	renderers                 int // renderer processes at the end
	spawned                   int // distinct renderer processes seen during the run
	byType                    string
}

func (s scaleResult) rps() float64 { return float64(s.renders) / s.dur.Seconds() }

func (s scaleResult) String() string {
	cpu := time.Duration(0)
	if s.renders > 0 {
		cpu = s.cpu / time.Duration(s.renders)
	}
	return fmt.Sprintf("%6.2f r/s  complete %d/%d failed %d  cpu/render %4d ms  renderers %d (seen %d)  ms/render by process: %s",
		s.rps(), s.complete, s.renders, s.failed, cpu.Milliseconds(), s.renderers, s.spawned, s.byType)
}

// renderers lists the --type=renderer processes in group pgid.
func renderers(pgid int) []int {
	var out []int
	for _, pid := range groupPIDs(pgid) {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if strings.Contains(string(cmd), "--type=renderer") {
			out = append(out, pid)
		}
	}
	return out
}

func countRenderers(pgid int) int { return len(renderers(pgid)) }

// cpuByType returns the CPU used so far by group pgid's processes, by
// --type (the browser process is "browser"), plus "self" for this process.
func cpuByType(pgid int) map[string]time.Duration {
	out := map[string]time.Duration{}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	out["self"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for pid, f := range groupStats(pgid) {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		typ := "browser"
		for _, a := range strings.FieldsFunc(string(cmd), func(r rune) bool { return r == 0 || r == ' ' }) {
			if v, ok := strings.CutPrefix(a, "--type="); ok {
				typ = v
			}
			if v, ok := strings.CutPrefix(a, "--utility-sub-type="); ok {
				typ = v
			}
		}
		out[typ] += statCPU(f)
	}
	return out
}

func cpuDiff(a, b map[string]time.Duration, n int64) string {
	var parts []string
	for k, v := range b {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, ((v-a[k])/time.Duration(n)).Milliseconds()))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// watchRenderers samples group pgid's renderer processes until stop is
// closed and returns how many distinct ones it saw.
func watchRenderers(pgid int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		seen := map[int]bool{}
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range renderers(pgid) {
				seen[p] = true
			}
			select {
			case <-stop:
				out <- len(seen)
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// loadFor runs conc workers calling one until d has passed.
func loadFor(d time.Duration, conc int, one func(i int64) (bool, error)) scaleResult {
	var res scaleResult
	var seq, renders, complete, failed atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				ok, err := one(seq.Add(1))
				if err != nil {
					failed.Add(1)
					continue
				}
				renders.Add(1)
				if ok {
					complete.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.dur = time.Since(start)
	res.renders, res.complete, res.failed = renders.Load(), complete.Load(), failed.Load()
	return res
}

// rodBaseline is bench/cmd/rodloop: reused pages, no isolation.
func rodBaseline(tb testing.TB, base string, tabs int, d time.Duration, variant string) scaleResult {
	dir := tb.TempDir()
	l := launcher.New().Bin(chromeBin).Headless(true).NoSandbox(true).Leakless(true).UserDataDir(dir).
		Set("no-first-run").Set("disable-background-networking").Set("disable-component-update").
		Set("disable-sync").Set("disable-quic").Set("disable-gpu").Set("disable-dev-shm-usage").
		Set("disable-extensions").Set("mute-audio").Set("hide-scrollbars").
		Set("disable-background-timer-throttling").Set("disable-renderer-backgrounding").
		Set("disable-backgrounding-occluded-windows")
	if strings.Contains(variant, "noauto") {
		l.Delete("enable-automation")
	}
	u, err := l.Launch()
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Cleanup()
	defer l.Kill()
	b := rod.New().ControlURL(u).NoDefaultDevice()
	if err := b.Connect(); err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	const js = `() => new Promise(r => { const t0 = Date.now(); (function c() {
	if (window.prerenderReady === true || (!('prerenderReady' in window) && document.getElementById('bench-complete'))) return r(true);
	if (Date.now() - t0 > 14000) return r(false);
	setTimeout(c, 10); })(); })`
	render := func(p *rod.Page, i int64) (bool, error) {
		tp := p.Timeout(15 * time.Second)
		defer tp.CancelTimeout()
		if err := tp.Navigate(fmt.Sprintf("%s/p/rod-%d", base, i)); err != nil {
			return false, err
		}
		if _, err := tp.Evaluate(rod.Eval(js).ByPromise()); err != nil {
			return false, err
		}
		html, err := tp.HTML()
		return strings.Contains(html, scaleMarker), err
	}
	pages := make(chan *rod.Page, tabs)
	for i := range tabs {
		bb := b
		if strings.Contains(variant, "incog") {
			if bb, err = b.Incognito(); err != nil {
				tb.Fatal(err)
			}
		}
		if strings.Contains(variant, "bg") {
			if _, err := bb.Page(proto.TargetCreateTarget{URL: "about:blank"}); err != nil {
				tb.Fatal(err)
			}
		}
		p, err := bb.Page(proto.TargetCreateTarget{URL: "about:blank", Background: strings.Contains(variant, "bg"),
			NewWindow: strings.Contains(variant, "win")})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := render(p, int64(-1-i)); err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			defer func() {
				tb.Logf("rod %q visibility: %s", variant, p.MustEval(`() => document.visibilityState`).String())
			}()
		}
		pages <- p
	}
	pgid := l.PID()
	cpu0 := groupCPU(pgid)
	bt0 := cpuByType(pgid)
	stop := make(chan struct{})
	seen := watchRenderers(pgid, stop)
	res := loadFor(d, tabs, func(i int64) (bool, error) {
		p := <-pages
		defer func() { pages <- p }()
		return render(p, i)
	})
	res.cpu = groupCPU(pgid) - cpu0
	close(stop)
	res.spawned = <-seen
	res.byType = cpuDiff(bt0, cpuByType(pgid), res.renders)
	res.renderers = countRenderers(pgid)
	return res
}

// prismRun renders with a Renderer of tabs tabs, 2*tabs callers (like
// bench/run.sh's renderload).
func prismRun(tb testing.TB, base string, tabs int, d time.Duration) scaleResult {
	ou, _ := url.Parse(base)
	r, err := New(Options{ChromePath: chromeBin, Tabs: tabs, UserDataDir: tb.TempDir(),
		Origin: func(h string) (*url.URL, bool) { return ou, h == pubHost }})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := waitHealthy(r, 30*time.Second); err != nil {
		tb.Fatal(err)
	}
	one := func(i int64) (bool, error) {
		res, err := r.Render(ctx, Request{URL: fmt.Sprintf("https://%s/p/prism-%d", pubHost, i)})
		if err != nil {
			return false, err
		}
		return strings.Contains(string(res.HTML), scaleMarker) && !res.Partial, nil
	}
	var wg sync.WaitGroup
	for i := range tabs { // warm up: every tab exists
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = one(int64(-1 - i)) }()
	}
	wg.Wait()
	pgid := r.cur.Load().pid
	cpu0 := groupCPU(pgid)
	bt0 := cpuByType(pgid)
	stop := make(chan struct{})
	seen := watchRenderers(pgid, stop)
	res := loadFor(d, 2*tabs, one)
	res.cpu = groupCPU(pgid) - cpu0
	close(stop)
	res.spawned = <-seen
	res.byType = cpuDiff(bt0, cpuByType(pgid), res.renders)
	res.renderers = countRenderers(pgid)
	return res
}

// TestScale compares renders/s of the Renderer with a bare rod loop at 1, 2
// and 4 tabs (PRISM_SCALE_TABS), interleaved in one run, with CPU per render
// by Chromium process type. It runs only with PRISM_SCALE set (the seconds
// per cell). PRISM_SCALE_NOFLAG=1 drops the page's prerenderReady (the rod
// loop then waits for its marker element). PRISM_SCALE_ROD lists rod loop
// variants separated by ";" (the first is the ratio's baseline): "" is
// bench/cmd/rodloop (pages in one
// window: all but the last created are hidden), "incog" puts each page in
// its own incognito context and "win" in its own window (both visible, like
// PRISM's tabs), "bg" makes each a background (hidden) tab.
func TestScale(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("PRISM_SCALE"))
	if secs <= 0 {
		t.Skip("set PRISM_SCALE=<seconds per cell> to run")
	}
	getEnv(t)
	origin := scaleOrigin()
	defer origin.Close()
	d := time.Duration(secs) * time.Second
	tabList := []int{1, 2, 4}
	if s := os.Getenv("PRISM_SCALE_TABS"); s != "" {
		tabList = nil
		for _, f := range strings.Fields(s) {
			n, _ := strconv.Atoi(f)
			tabList = append(tabList, n)
		}
	}
	for _, tabs := range tabList {
		var rod scaleResult
		for i, v := range strings.Split(os.Getenv("PRISM_SCALE_ROD"), ";") {
			r := rodBaseline(t, origin.URL, tabs, d, v)
			t.Logf("tabs=%d rod   %s  variant=%q", tabs, r, v)
			if i == 0 {
				rod = r
			}
		}
		prism := prismRun(t, origin.URL, tabs, d)
		t.Logf("tabs=%d prism %s  ratio %.2f", tabs, prism, prism.rps()/rod.rps())
	}
}

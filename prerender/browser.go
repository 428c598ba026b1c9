package prerender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-rod/rod"
	"github.com/go-rod/rod/lib/cdp"
	"github.com/go-rod/rod/lib/launcher"
	"github.com/go-rod/rod/lib/launcher/flags"
	"github.com/go-rod/rod/lib/proto"
	"github.com/go-rod/rod/lib/utils"
)

const (
	launchTimeout   = 30 * time.Second
	warmParallel    = 4 // tabs opened at once by warmTabs
	probeTimeout    = 5 * time.Second
	closeGrace      = time.Second // BrowserClose, then SIGKILL
	killGrace       = time.Second // SIGTERM, then SIGKILL
	backoffMin      = 100 * time.Millisecond
	backoffMax      = 5 * time.Second
	healthyPeriod   = 30 * time.Second // up this long: the backoff resets
	maxFirstFailure = 5                // launches failing before the first success: Run gives up
)

// instance is one launched browser with its tab pool.
type instance struct {
	r       *Renderer
	gen     int64
	l       *launcher.Launcher
	b       *rod.Browser
	pid     int
	dir     string
	started time.Time
	uaDesk  string
	uaMob   string

	ctx    context.Context // cancelled when the instance goes down
	cancel context.CancelCauseFunc
	dead   chan struct{} // the CDP event stream ended
	exited chan struct{} // the process exited and its profile is removed
	pool   *pool
	wg     sync.WaitGroup // goroutines owned by this instance (tab event loops)
	tabs   sync.Map       // proto.TargetTargetID -> *tab
	// probe is a DevTools connection of its own for the liveness probe, so
	// that it never queues behind a page's traffic on the main one (a
	// 20 MB response body is one message there).
	probe   *cdp.Client
	probeWS *cdp.WebSocket

	renders  atomic.Int64
	downOnce sync.Once
}

// Run launches and supervises the browser until ctx is done, then closes it
// and removes its profile. It returns an error only if the browser can never
// be started.
func (r *Renderer) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("prerender: Run called twice")
	}
	defer r.drains.Wait()
	parent := r.opts.UserDataDir
	if parent == "" {
		parent = os.TempDir()
	}
	if n := sweepStaleProfiles(parent, time.Now()); n > 0 {
		r.log.Info("removed browser profiles left by killed browsers", "dir", parent, "count", n)
	}
	streams, err := r.startStreams(ctx)
	if err != nil {
		return fmt.Errorf("prerender: stream server: %w", err)
	}
	r.streams = streams
	backoff := backoffMin
	everUp := false
	failures := 0
	var inst *instance
	for {
		if inst == nil {
			var err error
			inst, err = r.launch(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				failures++
				r.log.Error("browser launch failed", "err", err, "attempt", failures, "retry_in", backoff)
				if !everUp && failures >= maxFirstFailure {
					return fmt.Errorf("prerender: browser never started: %w", err)
				}
				if !sleepCtx(ctx, backoff) {
					return nil
				}
				backoff = min(backoff*2, backoffMax)
				continue
			}
			if everUp {
				r.restarts.Add(1)
				r.metrics.restart()
			}
			everUp, failures = true, 0
			r.probeErr.Store(nil)
			r.cur.Store(inst)
			r.log.Info("browser started", "pid", inst.pid, "gen", inst.gen, "bin", r.opts.ChromePath)
		}

		why, err := r.supervise(ctx, inst)
		switch why {
		case downShutdown:
			r.cur.Store(nil)
			inst.teardown(ErrUnavailable, true)
			r.log.Info("browser stopped", "pid", inst.pid, "gen", inst.gen)
			return nil
		case downRecycle:
			next, lerr := r.launch(ctx)
			if lerr != nil {
				if ctx.Err() != nil {
					r.cur.Store(nil)
					inst.teardown(ErrUnavailable, true)
					return nil
				}
				r.log.Error("browser recycle: launch failed, keeping the old browser", "err", lerr)
				inst.renders.Store(0) // try again after another RecycleAfter renders
				continue
			}
			r.restarts.Add(1)
			r.metrics.restart()
			r.cur.Store(next)
			r.log.Info("browser recycled", "reason", err, "old_pid", inst.pid, "pid", next.pid, "gen", next.gen)
			old := inst
			r.drains.Add(1)
			go func() {
				defer r.drains.Done()
				old.pool.close(errRetired)
				t := time.NewTimer(r.opts.Timeout + 5*time.Second)
				defer t.Stop()
				select {
				case <-old.pool.idle:
				case <-t.C:
				case <-ctx.Done():
				}
				old.teardown(ErrUnavailable, true)
			}()
			inst = next
		case downCrash:
			r.cur.Store(nil)
			r.probeErr.Store(&err)
			r.crashes.Add(1)
			r.metrics.crash()
			r.log.Error("browser down", "pid", inst.pid, "gen", inst.gen, "err", err)
			inst.teardown(fmt.Errorf("%w: %w", ErrUnavailable, err), false)
			if r.opts.Now().Sub(inst.started) > healthyPeriod {
				backoff = backoffMin
			}
			inst = nil
			if !sleepCtx(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, backoffMax)
		}
	}
}

type downReason int

const (
	downShutdown downReason = iota
	downCrash
	downRecycle
)

// supervise waits until inst must go: ctx done, crash, hang, or recycle.
func (r *Renderer) supervise(ctx context.Context, inst *instance) (downReason, error) {
	probe := time.NewTicker(r.opts.ProbeInterval)
	defer probe.Stop()
	for {
		if ctx.Err() != nil {
			return downShutdown, nil
		}
		if inst.renders.Load() >= int64(r.opts.RecycleAfter) {
			return downRecycle, fmt.Errorf("%d renders", inst.renders.Load())
		}
		select {
		case <-ctx.Done():
			return downShutdown, nil
		case <-inst.dead:
			return downCrash, errors.New("browser connection lost")
		case <-inst.exited:
			return downCrash, errors.New("browser process exited")
		case <-r.recycle:
		case <-probe.C:
			pctx, cancel := context.WithTimeout(inst.ctx, probeTimeout)
			_, err := inst.probe.Call(pctx, "", proto.BrowserGetVersion{}.ProtoReq(), nil)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return downShutdown, nil
				}
				return downCrash, fmt.Errorf("liveness probe: %w", err)
			}
			if lim := r.opts.RecycleMemoryMB; lim > 0 {
				if mem := groupMemory(inst.pid); mem > int64(lim)<<20 {
					return downRecycle, fmt.Errorf("memory (PSS) %d MiB over %d MiB", mem>>20, lim)
				}
			}
		}
	}
}

// launch starts a browser and connects to it.
func (r *Renderer) launch(ctx context.Context) (*instance, error) {
	parent := r.opts.UserDataDir
	if parent == "" {
		parent = os.TempDir()
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("browser profile: %w", err)
	}
	dir, err := os.MkdirTemp(parent, profilePrefix)
	if err != nil {
		return nil, fmt.Errorf("browser profile: %w", err)
	}
	l := launcher.New()
	// Replace rod's defaults (which read flags and env in lib/defaults) with
	// an explicit set.
	l.Flags = map[flags.Flag][]string{}
	l.Bin(r.opts.ChromePath).
		Leakless(true).
		Headless(true).
		UserDataDir(dir).
		Set(flags.RemoteDebuggingPort, "0").
		Set("no-first-run").Set("no-startup-window").Set("no-default-browser-check").
		Set("disable-background-networking").Set("disable-component-update").
		Set("disable-sync").Set("disable-quic").Set("disable-gpu").
		Set("disable-dev-shm-usage").Set("disable-breakpad").Set("disable-crash-reporter").
		Set("disable-extensions").Set("disable-default-apps").Set("disable-domain-reliability").
		Set("disable-client-side-phishing-detection").Set("disable-hang-monitor").
		// Popup blocking stays on (a page has no user gesture to open one
		// with) and so does IPC flooding protection (a history.pushState or
		// location.hash flood would otherwise starve the browser process):
		// see tab.go and README "Hostile pages".
		Set("disable-prompt-on-repost").
		Set("disable-background-timer-throttling").Set("disable-renderer-backgrounding").
		Set("disable-backgrounding-occluded-windows").
		Set("metrics-recording-only").Set("mute-audio").Set("no-pings").
		Set("use-mock-keychain").Set("password-store", "basic").
		Set("force-color-profile", "srgb").
		Set("hide-scrollbars").
		// Every request of a page is fetched by the renderer in Go (see
		// intercept.go); anything that escapes interception (WebSockets,
		// workers, Chromium's own background traffic) meets a dead proxy.
		Set(flags.ProxyServer, "http://127.0.0.1:9").
		// Loopback goes to the dead proxy too, but for PRISM's own stream
		// server (stream.go).
		Set("proxy-bypass-list", r.bypassList()).
		// WebRTC sends UDP outside any proxy unless told not to: with
		// non-proxied UDP off it can only use the dead proxy above.
		Set("force-webrtc-ip-handling-policy", "disable_non_proxied_udp").
		Set("webrtc-ip-handling-policy", "disable_non_proxied_udp").
		// One renderer process serves many sites: no process swap per navigation.
		Set("disable-site-isolation-trials").
		Set("disable-features", "site-per-process", "IsolateOrigins", "Translate", "TranslateUI", "OptimizationHints",
			"MediaRouter", "DialMediaRouteProvider", "InterestFeedContentSuggestions").
		Append("disable-features", "NetworkTimeServiceQuerying").
		// A tab's frozen document is discarded by the next navigation, not
		// kept (holding memory) for a "back" that never comes (see
		// tab.reset). Isolation does not depend on it: a kept document
		// stays frozen.
		Append("disable-features", "BackForwardCache").
		// A new frame host per cross-document navigation made the reset's
		// navigation to about:blank cost a quarter of PRISM's renders/s
		// (bench/README.md); one frame host per tab does.
		Append("disable-features", "RenderDocument").
		// Local network access checks would stop the browser from taking a
		// streamed body from PRISM's loopback stream server (stream.go).
		// Every request a page makes is decided by PRISM, which refuses
		// private addresses itself (intercept.go).
		Append("disable-features", "LocalNetworkAccessChecks", "BlockInsecurePrivateNetworkRequests", "PrivateNetworkAccessSendPreflights")
	if os.Geteuid() == 0 {
		l.NoSandbox(true)
	}
	lctx, lcancel := context.WithTimeout(ctx, launchTimeout)
	defer lcancel()
	l = l.Context(lctx)
	u, err := l.Launch()
	if err != nil {
		if pid := l.PID(); pid > 0 {
			killGroup(pid)
			l.Cleanup()
		}
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("launch %s: %w", r.opts.ChromePath, err)
	}
	ictx, icancel := context.WithCancelCause(context.Background())
	inst := &instance{
		r: r, gen: r.gen.Add(1), l: l, pid: l.PID(), dir: dir, started: r.opts.Now(),
		ctx: ictx, cancel: icancel,
		dead: make(chan struct{}), exited: make(chan struct{}),
		pool: newPool(r.opts.Tabs, r.opts.OnlineReservationPercent),
	}
	go func() { // ends when the process exits; teardown makes sure it does
		l.Cleanup()
		close(inst.exited)
	}()
	b := rod.New().ControlURL(u).NoDefaultDevice().SlowMotion(0).Trace(false).Monitor("").Context(ictx)
	connected := make(chan error, 1)
	go func() { connected <- b.Connect() }()
	waitConnect := false
	select {
	case err = <-connected:
	case <-lctx.Done():
		err, waitConnect = lctx.Err(), true
	}
	if err == nil {
		inst.b = b
		var v *proto.BrowserGetVersionResult
		vctx, vcancel := context.WithTimeout(lctx, probeTimeout)
		v, err = proto.BrowserGetVersion{}.Call(b.Context(vctx))
		vcancel()
		if err == nil {
			inst.uaDesk, inst.uaMob = defaultUAs(v.UserAgent)
		}
	}
	if err == nil {
		inst.probeWS = &cdp.WebSocket{}
		if err = inst.probeWS.Connect(lctx, u, nil); err == nil {
			inst.probe = cdp.New().Logger(utils.LoggerQuiet).Start(inst.probeWS)
			probeEvents := inst.probe.Event()
			inst.wg.Add(1)
			go func() {
				defer inst.wg.Done()
				for range probeEvents { //nolint:revive // none are asked for; drain until it closes
				}
			}()
		} else {
			inst.probeWS = nil
		}
	}
	if err != nil {
		inst.teardown(err, false)
		if waitConnect {
			<-connected // Connect returns once the process is gone
		}
		return nil, fmt.Errorf("connect to browser: %w", err)
	}
	events := b.Event()
	inst.wg.Add(1)
	go func() {
		defer inst.wg.Done()
		for msg := range events {
			inst.browserEvent(msg)
		}
		close(inst.dead)
	}()
	inst.warmTabs(lctx)
	inst.awaitIdle(lctx)
	return inst, nil
}

// A started browser's renderers keep busy for a second or two after their
// first pages (Chromium's own deferred start-up work: about 0.4 of a core
// each for 1.5 s with 4 tabs, measured here), and a render then costs up
// to twice what it does later. awaitIdle holds the start back until the
// browser's processes are idle: under idleCPU of CPU in an idleWindow, for
// at most idleWait.
const (
	idleWindow = 200 * time.Millisecond
	idleCPU    = 20 * time.Millisecond
	idleWait   = 3 * time.Second
)

// awaitIdle waits until the browser's processes are idle (see idleWait),
// or ctx is done.
func (inst *instance) awaitIdle(ctx context.Context) {
	start := time.Now()
	prev := browserCPU(inst.pid)
	for time.Since(start) < idleWait {
		if !sleepCtx(ctx, idleWindow) {
			return
		}
		cur := browserCPU(inst.pid)
		if cur-prev < idleCPU {
			inst.r.log.Debug("browser idle after its start", "waited", time.Since(start))
			return
		}
		prev = cur
	}
	inst.r.log.Debug("browser still busy after its start: serving anyway", "waited", time.Since(start))
}

// warmTabs opens the tab of every slot before the browser serves its first
// render (a start, a relaunch after a crash, a recycle), a few at a time,
// with the default emulation applied, a page of PRISM's own rendered in it
// under one of the warm sites (warmUp), and then, when Options.WarmPath is
// set, that page of the site rendered from the origin (warmRender; once
// one fails, the tabs after it skip theirs). So no render pays for opening
// its tab, starting its site's renderer process or running the site's
// scripts the first time. A tab that fails to open here is opened by its
// first render, as one that broke is.
func (inst *instance) warmTabs(ctx context.Context) {
	inst.pool.mu.Lock()
	slots := append([]*slot(nil), inst.pool.slots...) // not handed out yet
	inst.pool.mu.Unlock()
	var wg sync.WaitGroup
	var originDown atomic.Bool // a warm-up render failed
	sem := make(chan struct{}, warmParallel)
	for i, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t, err := inst.newTab(ctx)
			if err == nil {
				if err = t.emulate(ctx, Request{}); err == nil {
					err = t.warmUp(ctx, inst.r.warmURLs[i%len(inst.r.warmURLs)])
				}
				if err == nil && len(inst.r.warmPages) > 0 && !originDown.Load() {
					var failed bool
					failed, err = t.warmRender(ctx, inst.r.warmPages[i%len(inst.r.warmPages)])
					if failed {
						originDown.Store(true) // the other tabs do not wait for it too
					}
				}
				if err != nil {
					t.close()
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					inst.r.log.Warn("opening a tab ahead of renders failed: its first render opens it", "err", err)
				}
				return
			}
			s.tab = t
		}()
	}
	wg.Wait()
}

// browserEvent watches targets (rod turned target discovery on): a popup
// or worker target a page opened is closed as soon as it appears, and a
// crashed tab's render ends at once.
func (inst *instance) browserEvent(msg *rod.Message) {
	switch msg.Method {
	case "Target.targetCreated":
		var e proto.TargetTargetCreated
		if !msg.Load(&e) || e.TargetInfo == nil || !foreignTarget(e.TargetInfo) {
			return
		}
		id := e.TargetInfo.TargetID
		inst.wg.Add(1)
		go func() {
			defer inst.wg.Done()
			ctx, cancel := context.WithTimeout(inst.ctx, probeTimeout)
			defer cancel()
			if _, err := (proto.TargetCloseTarget{TargetID: id}).Call(inst.b.Context(ctx)); err == nil {
				inst.r.metrics.popupClosed()
			}
		}()
	case "Target.targetCrashed":
		var e proto.TargetTargetCrashed
		if !msg.Load(&e) {
			return
		}
		if t, ok := inst.tabs.Load(e.TargetID); ok {
			t.(*tab).crashed()
		}
	}
}

// foreignTarget reports targets closed as soon as they appear: what a page
// can open (pageOwned), but PRISM's own tabs (pages without an opener) and
// dedicated workers (they live and die with their document, which the
// reset discards).
func foreignTarget(ti *proto.TargetTargetInfo) bool {
	switch {
	case !pageOwned(ti.Type) || ti.Type == "worker":
		return false
	case ti.Type == proto.TargetTargetInfoTypePage:
		return ti.OpenerID != "" || ti.OpenerFrameID != ""
	}
	return true
}

// teardown takes the instance down: renders in flight fail with cause, the
// browser is closed (asked politely if graceful, else SIGTERM), its process
// group is SIGKILLed after a grace period, and its profile removed.
func (inst *instance) teardown(cause error, graceful bool) {
	inst.downOnce.Do(func() {
		inst.pool.close(cause)
		grace := killGrace
		if graceful && inst.b != nil {
			grace = closeGrace
			ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
			err := proto.BrowserClose{}.Call(inst.b.Context(ctx))
			cancel()
			if err != nil && inst.pid > 1 {
				// It did not answer in time: no more politeness.
				_ = syscall.Kill(-inst.pid, syscall.SIGTERM)
			}
		} else if inst.pid > 1 {
			_ = syscall.Kill(-inst.pid, syscall.SIGTERM)
		}
		inst.cancel(cause)
		if inst.probeWS != nil {
			_ = inst.probeWS.Close()
		}
		waitClosed(inst.exited, grace)
		if inst.pid > 1 {
			_ = syscall.Kill(-inst.pid, syscall.SIGKILL) // stragglers of the group
		}
		killByProfile(inst.dir)
		if !waitClosed(inst.exited, 10*time.Second) {
			inst.r.log.Error("browser process did not exit after SIGKILL", "pid", inst.pid)
		}
		inst.wg.Wait()
		_ = os.RemoveAll(inst.dir)
	})
}

// bypassList is the browser's proxy bypass list: nothing (not even
// loopback) but the stream server's address.
func (r *Renderer) bypassList() string {
	if r.streams == nil {
		return "<-loopback>"
	}
	return "<-loopback>;" + r.streams.addr()
}

// waitClosed waits up to d for ch to close and reports whether it did.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// killGroup kills the process group pgid of a browser that failed to start.
func killGroup(pgid int) {
	if pgid > 1 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// killByProfile kills processes outside the browser's group that still use
// its profile directory (crashpad handlers start their own groups).
func killByProfile(dir string) {
	if dir == "" {
		return
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	needle := []byte(dir)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, needle) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// groupMemory sums the proportional set size (PSS) of the processes in
// group pgid: each page they share (the browser binary, shared memory
// between Chromium's processes) counts once across them, where summing RSS
// would count it once per process and grow with the number of tabs rather
// than with what the browser holds. A process whose smaps_rollup cannot be
// read counts its RSS.
func groupMemory(pgid int) int64 {
	page := int64(os.Getpagesize())
	var total int64
	for pid, f := range groupStats(pgid) {
		if pss, ok := processPSS(pid); ok {
			total += pss
			continue
		}
		if len(f) > 21 { // rss is field 24 of stat, f[21] here
			rss, _ := strconv.ParseInt(f[21], 10, 64)
			total += rss * page
		}
	}
	return total
}

// processPSS reads the Pss line of /proc/PID/smaps_rollup, in bytes.
func processPSS(pid int) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(line, "Pss:")
		if !ok {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// defaultUAs derives desktop and mobile Chrome user agents from the
// browser's own, without "HeadlessChrome".
func defaultUAs(ua string) (desktop, mobile string) {
	major := "130"
	if i := strings.Index(ua, "Chrome/"); i >= 0 {
		v := ua[i+len("Chrome/"):]
		if j := strings.IndexByte(v, '.'); j > 0 {
			major = v[:j]
		}
	}
	desktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/" + major + ".0.0.0 Safari/537.36"
	mobile = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/" + major + ".0.0.0 Mobile Safari/537.36"
	return desktop, mobile
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package prerender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-rod/rod"
	"github.com/go-rod/rod/lib/proto"
)

// tab is one page in its own incognito browser context, reused render after
// render and cleared in between (see reset).
type tab struct {
	inst *instance
	bctx *rod.Browser // the incognito context
	page *rod.Page

	mu    sync.Mutex
	state *renderState // nil between renders

	emu emulation // last applied viewport and UA

	window proto.BrowserWindowID // the tab's own window
	visMu  sync.Mutex            // serializes hide and show
	shown  bool                  // the window is not minimized

	// broken is set when the tab's renderer crashed: its render ends at
	// once and the tab is replaced, never reused.
	broken atomic.Bool
	// warming is the URL of warmUp's page while it runs: it is answered.
	warming atomic.Pointer[string]
	// held says the last reset left the page frozen on its document (else
	// the tab is on an about:blank, not frozen). The next render's
	// navigation replaces that document and then unfreezes the page (see
	// reset). Used by one render at a time.
	held bool
}

type emulation struct {
	width, height int
	mobile        bool
	ua            string
}

// mainDoc is what the renderer learnt fetching the main document.
type mainDoc struct {
	status   int
	header   http.Header
	location string // set for a 3xx with Location: not followed
	err      error
}

// renderState is the per-render view of a tab's network activity.
type renderState struct {
	ctx       context.Context // cancelled when the render ends
	pub       *url.URL
	mainFrame proto.PageFrameID

	mu           sync.Mutex
	mainClaimed  bool
	main         *mainDoc
	inflight     map[proto.FetchRequestID]requestKind
	lastActivity time.Time
	// Scripts that arrived, which may still have to be compiled and run
	// (scriptMargin): the last module script (a dynamic import() is run
	// whenever it is ready, the load event does not wait for it), and the
	// last classic one. A classic script that arrived before the
	// document's load event has run by then: parser-inserted, async,
	// deferred and script-inserted scripts all hold the load event back
	// until they ran (one a readystatechange handler inserts as the
	// document completes does not, and has netMargin alone). loadedBy is a
	// time no later than that load event (zero: not known yet). The
	// margin runs from moduleDue and classicDue: the arrival put later by
	// the script's size (compileTime).
	lastClassic, loadedBy, moduleDue, classicDue time.Time

	seq       uint64          // counts network activity (see activity)
	origins   map[string]bool // document origins to clear afterwards
	committed map[string]bool // origins of documents that committed in a frame

	cancel    context.CancelCauseFunc // ends the render early (ErrPageCrashed)
	shown     atomic.Bool             // the tab was shown during this render
	showAsked atomic.Bool             // the page asked to be shown
	pageBytes atomic.Int64            // response bytes fetched for the page so far
	overLimit atomic.Bool             // a request was refused: Options.MaxPageBytes
}

func (st *renderState) claimMain() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.mainClaimed {
		return false
	}
	st.mainClaimed = true
	return true
}

func (st *renderState) setMain(m *mainDoc) {
	st.mu.Lock()
	st.main = m
	st.mu.Unlock()
}

func (st *renderState) mainDoc() *mainDoc {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.main
}

func (st *renderState) addOrigin(u *url.URL) {
	st.mu.Lock()
	st.origins[u.Scheme+"://"+u.Host] = true
	st.mu.Unlock()
}

// started counts a request the page made (paused by the Fetch domain, so
// decided in Go) as in flight until finished. Only these count: a request
// PRISM never sees (a worker's script, fetched in the worker's own context)
// would never be reported finished and would keep the page from ever
// being quiet. EventSource streams are long-lived by design and do not
// count.
//
// module says a script request was made in CORS mode (it carries an
// Origin header): a module script, static or import(), or a classic one
// with a crossorigin attribute, which is counted with them.
func (st *renderState) started(id proto.FetchRequestID, typ proto.NetworkResourceType, module bool, now time.Time) {
	if typ == proto.NetworkResourceTypeEventSource || typ == proto.NetworkResourceTypeWebSocket {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.inflight[id] = requestKind{typ: typ, module: module}
	st.lastActivity = now
	st.seq++
}

func (st *renderState) finished(id proto.FetchRequestID, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if k, ok := st.inflight[id]; ok {
		delete(st.inflight, id)
		st.lastActivity = now
		st.seq++
		switch {
		case k.typ != proto.NetworkResourceTypeScript:
		case k.module:
			st.moduleDue = later(st.moduleDue, now.Add(compileTime(k)))
		default:
			st.lastClassic = now
			st.classicDue = later(st.classicDue, now.Add(compileTime(k)))
		}
	}
}

// sized records the size of a script's response (notModified: the
// browser's kept copy, of a size PRISM does not know).
func (st *renderState) sized(id proto.FetchRequestID, bytes int64, notModified bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if k, ok := st.inflight[id]; ok {
		k.bytes, k.notModified = bytes, notModified
		st.inflight[id] = k
	}
}

// Compiling a script takes time after it arrived, in proportion to its
// size: half a megabyte of module (the import-big trap) compiled and ran
// more than 50 ms after its arrival under the e2e suite's load. The script
// margin is put off by compilePerMB per MiB, at most compileMax; a kept
// copy (304), whose size PRISM does not know, by compileKept.
const (
	compilePerMB = 200 * time.Millisecond
	compileMax   = 250 * time.Millisecond
	compileKept  = 50 * time.Millisecond
)

func compileTime(k requestKind) time.Duration {
	if k.notModified {
		return compileKept
	}
	return min(time.Duration(k.bytes)*compilePerMB/(1<<20), compileMax)
}

// requestKind is what renderState keeps of a request in flight.
type requestKind struct {
	typ    proto.NetworkResourceType
	module bool // a script fetched in CORS mode (see started)
	// A script's response: its bytes, or a 304 (the browser's kept copy).
	bytes       int64
	notModified bool
}

// loaded records that the main document's load event came no earlier
// than at.
func (st *renderState) loaded(at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.loadedBy.IsZero() {
		st.loadedBy = at
	}
}

// addCommitted records the origin of a document that committed in one of
// the page's frames (opaque and about: origins hold no session storage).
func (st *renderState) addCommitted(origin string) {
	if !storageOrigin(origin) {
		return
	}
	st.mu.Lock()
	if len(st.committed) < 256 {
		st.committed[origin] = true
	}
	st.mu.Unlock()
}

// takeBytes counts n more response bytes for the page and reports whether
// they stay within limit (0: none); past it, the render is marked.
func (st *renderState) takeBytes(n, limit int64) bool {
	if st.pageBytes.Add(n) <= limit || limit <= 0 {
		return true
	}
	st.overLimit.Store(true)
	return false
}

// touch counts now as network activity: the quiet period starts again.
func (st *renderState) touch(now time.Time) {
	st.mu.Lock()
	st.lastActivity = now
	st.seq++
	st.mu.Unlock()
}

// quiet reports whether no request has been in flight for d.
func (st *renderState) quiet(now time.Time, d time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.inflight) == 0 && now.Sub(st.lastActivity) >= d
}

// settled reports whether no request has been in flight for d, and none
// that brought a script for scriptD.
func (st *renderState) settled(now time.Time, d, scriptD time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	script := st.moduleDue
	if st.loadedBy.IsZero() || !st.lastClassic.Before(st.loadedBy) {
		script = later(script, st.classicDue)
	}
	return len(st.inflight) == 0 && now.Sub(st.lastActivity) >= d && now.Sub(script) >= scriptD
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// activity is a count that moves with every request started or finished
// (and every touch): unchanged across a wait, nothing happened on the
// network meanwhile.
func (st *renderState) activity() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.seq
}

// newTab opens a page in a fresh incognito context and starts its event loop.
func (inst *instance) newTab(ctx context.Context) (*tab, error) {
	b := inst.b.Context(ctx)
	ib, err := b.Incognito()
	if err != nil {
		return nil, fmt.Errorf("incognito context: %w", err)
	}
	ib = ib.Context(inst.ctx)
	page, err := ib.Page(proto.TargetCreateTarget{})
	if err != nil {
		_ = proto.TargetDisposeBrowserContext{BrowserContextID: ib.BrowserContextID}.Call(b)
		return nil, fmt.Errorf("new page: %w", err)
	}
	t := &tab{inst: inst, bctx: ib, page: page}
	inst.tabs.Store(page.TargetID, t) // for Target.targetCrashed (browser.go)
	events := page.Event()            // subscribe before enabling the domains
	inst.wg.Add(1)
	go func() {
		defer inst.wg.Done()
		t.loop(events)
	}()
	p := page.Context(ctx)
	zero := 0 // no response bodies kept for DevTools: PRISM has them already
	setup := []proto.Request{
		proto.NetworkEnable{MaxTotalBufferSize: &zero, MaxResourceBufferSize: &zero},
		proto.InspectorEnable{}, // Inspector.targetCrashed
		proto.NetworkSetBypassServiceWorker{Bypass: true},
		proto.FetchEnable{Patterns: []*proto.FetchRequestPattern{{URLPattern: "*", RequestStage: proto.FetchRequestStageRequest}}},
	}
	if inst.r.opts.NoBrowserCache {
		setup = append(setup, proto.NetworkSetCacheDisabled{CacheDisabled: true})
	}
	for _, req := range setup {
		if _, err := p.Call(ctx, string(page.SessionID), req.ProtoReq(), req); err != nil {
			t.close()
			return nil, fmt.Errorf("page setup %s: %w", req.ProtoReq(), err)
		}
	}
	if err := t.setupVisibility(ctx); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// close disposes of the tab's browser context (and so its page and any
// target opened from it).
func (t *tab) close() {
	t.inst.tabs.Delete(t.page.TargetID)
	ctx, cancel := context.WithTimeout(t.inst.ctx, 2*time.Second)
	defer cancel()
	_ = proto.TargetDisposeBrowserContext{BrowserContextID: t.bctx.BrowserContextID}.Call(t.inst.b.Context(ctx))
}

// crashed marks the tab broken after its renderer crashed and ends the
// render in progress with ErrPageCrashed.
func (t *tab) crashed() {
	if t.broken.Swap(true) {
		return
	}
	t.inst.r.metrics.pageCrash()
	if st := t.current(); st != nil {
		st.cancel(ErrPageCrashed)
	}
}

// answerDialog dismisses a JavaScript dialog, which would otherwise stall
// the page until the render timeout: alert and beforeunload are accepted
// (the page goes on, a navigation proceeds), confirm and prompt cancelled
// (false, null), as a person who clicks nothing would leave them.
func (t *tab) answerDialog(typ proto.PageDialogType) {
	ctx, cancel := t.cdpCtx()
	defer cancel()
	accept := typ == proto.PageDialogTypeAlert || typ == proto.PageDialogTypeBeforeunload
	if err := (proto.PageHandleJavaScriptDialog{Accept: accept}).Call(t.page.Context(ctx)); err == nil {
		t.inst.r.metrics.dialog()
	}
}

// loop dispatches the page's events until the page or browser goes away.
func (t *tab) loop(events <-chan *rod.Message) {
	r := t.inst.r
	for msg := range events {
		switch msg.Method {
		case "Fetch.requestPaused":
			var e proto.FetchRequestPaused
			if !msg.Load(&e) {
				continue
			}
			st := t.current()
			icon := browserIcon(&e)
			if st != nil && !icon {
				module := e.ResourceType == proto.NetworkResourceTypeScript && hasHeader(e.Request.Headers, "Origin")
				st.started(e.RequestID, e.ResourceType, module, r.opts.Now())
			}
			t.inst.wg.Add(1)
			go func() {
				defer t.inst.wg.Done()
				if icon {
					t.fail(e.RequestID, proto.NetworkErrorReasonBlockedByClient)
					return
				}
				defer func() {
					if v := recover(); v != nil { // a bug must not take PRISM down with the page
						r.log.Error("render: panic deciding a request", "url", e.Request.URL, "panic", v, "stack", string(debug.Stack()))
						t.fail(e.RequestID, proto.NetworkErrorReasonFailed)
					}
					if st != nil {
						st.finished(e.RequestID, r.opts.Now())
					}
				}()
				t.handlePaused(st, &e)
			}()
		case "Runtime.bindingCalled":
			var e proto.RuntimeBindingCalled
			st := t.current()
			if st == nil || !msg.Load(&e) || e.Name != showBinding || st.showAsked.Swap(true) {
				continue
			}
			t.inst.wg.Add(1)
			go func() {
				defer t.inst.wg.Done()
				if _, err := t.show(st.ctx, st); err != nil && st.ctx.Err() == nil {
					r.log.Warn("showing a tab failed: the page renders hidden", "err", err)
				}
			}()
		case "Page.javascriptDialogOpening":
			var e proto.PageJavascriptDialogOpening
			if !msg.Load(&e) {
				continue
			}
			t.inst.wg.Add(1)
			go func() {
				defer t.inst.wg.Done()
				t.answerDialog(e.Type)
			}()
		case "Inspector.targetCrashed":
			t.crashed()
		case "Page.frameNavigated":
			var e proto.PageFrameNavigated
			if st := t.current(); st != nil && msg.Load(&e) && e.Frame != nil {
				st.addCommitted(e.Frame.SecurityOrigin)
			}
		}
	}
}

// browserIcon reports whether e is the browser's own request for its
// site's /favicon.ico (made after the load, of type Other: a page's own
// fetch, image or link is of another type). It is failed at once, never
// asked of the origin and never counted as the page's activity: no icon
// changes what a render captures, and waiting for it would hold every
// render up by the network's margin.
func browserIcon(e *proto.FetchRequestPaused) bool {
	if e.ResourceType != proto.NetworkResourceTypeOther || e.Request.Method != http.MethodGet {
		return false
	}
	u, err := url.Parse(e.Request.URL)
	return err == nil && u.Path == "/favicon.ico" && u.RawQuery == ""
}

func (t *tab) current() *renderState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// begin installs the state of a new render.
func (t *tab) begin(ctx context.Context, cancel context.CancelCauseFunc, pub *url.URL) *renderState {
	st := &renderState{
		ctx: ctx, cancel: cancel, pub: pub, mainFrame: t.page.FrameID,
		inflight: map[proto.FetchRequestID]requestKind{}, origins: map[string]bool{}, committed: map[string]bool{},
		lastActivity: t.inst.r.opts.Now(),
	}
	t.mu.Lock()
	t.state = st
	t.mu.Unlock()
	return st
}

// warmPage is what warmUp renders: script that builds and lays out some
// DOM, with a timer and a promise chain. The tab's own request handling
// answers it (handlePaused) without a request leaving PRISM, so the
// warm-up goes through the same interception as a render. It is loaded at
// warmPath under a site PRISM renders (Options.WarmSites), or at warmURL,
// a site of its own, when none is known: a tab's first render of a site
// then starts that site's renderer process (bench/README.md).
const (
	warmPath = "/.well-known/prism-warm-up"
	warmURL  = "https://prism-warm-up.invalid" + warmPath
	warmPage = `<!DOCTYPE html><html><head><title>warm</title></head><body><main></main><script>
const m = document.querySelector('main');
for (let i = 0; i < 50; i++) { const a = document.createElement('article'); a.innerHTML = '<h2>title ' + i + '</h2><p>text</p>'; m.appendChild(a); }
Promise.resolve().then(() => setTimeout(() => { m.dataset.done = '1'; m.offsetHeight; }, 0));
</script></body></html>`
)

// warmUp renders warmPage in the tab, waits for it as a render does and
// captures it, then goes back to about:blank: the tab's renderer has run
// PRISM's scripts and a page once before its first render.
func (t *tab) warmUp(ctx context.Context, u string) error {
	p := t.page.Context(ctx)
	t.warming.Store(&u)
	defer t.warming.Store(nil)
	if _, err := (proto.PageNavigate{URL: u}).Call(p); err != nil {
		return fmt.Errorf("warm-up navigate: %w", err)
	}
	if _, err := t.evalString(ctx, loadedJS); err != nil {
		return fmt.Errorf("warm-up load: %w", err)
	}
	if _, err := t.askDone(ctx); err != nil {
		return fmt.Errorf("warm-up wait: %w", err)
	}
	if _, err := t.capture(ctx, t.inst.r.keepTypes); err != nil {
		return fmt.Errorf("warm-up capture: %w", err)
	}
	if err := t.blank(ctx); err != nil {
		return fmt.Errorf("warm-up reset: %w", err)
	}
	return nil
}

// warmRender renders the page at raw in the tab as a render does, result
// discarded, and resets the tab. failed says the page did not render (the
// origin down or slow: logged); err that the tab is unfit for renders.
func (t *tab) warmRender(ctx context.Context, raw string) (failed bool, err error) {
	r := t.inst.r
	pub, err := parsePublicURL(raw)
	if err != nil {
		return true, fmt.Errorf("warm page: %w", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, min(r.opts.Timeout, warmRenderTimeout))
	defer tcancel()
	rctx, rcancel := context.WithCancelCause(tctx)
	defer rcancel(nil)
	st := t.begin(rctx, rcancel, pub)
	start := time.Now()
	res, _, rerr := t.run(ctx, rctx, st, Request{URL: raw})
	rcancel(nil)
	if rerr == nil && res.Status >= 500 {
		rerr = fmt.Errorf("status %d", res.Status)
	}
	if rerr != nil {
		r.log.Info("warm-up render failed: the tabs' first renders run the site's scripts for the first time", "url", raw, "err", rerr)
	} else {
		r.log.Debug("warm-up render", "url", raw, "status", res.Status, "ended", res.Ended, "took", time.Since(start))
	}
	if t.broken.Load() {
		return rerr != nil, ErrPageCrashed
	}
	rst, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	return rerr != nil, t.reset(rst, st)
}

// reset ends a render and clears everything the page could leave behind
// for the next one, from outside the page (DevTools), so that nothing the
// page replaced (globals, prototypes, Symbol.for) changes what is done:
//
//  1. Its requests fail from now on (no state), and its window is hidden.
//  2. It is frozen (Page.setWebLifecycleState): its timers and callbacks
//     stop while the rest of the reset runs.
//  3. Every other target of the tab's browser context (popups, including
//     about:blank ones that script their opener) is closed, and the
//     session storage of every frame cleared (see clearSessionStorage),
//     both at once.
//  4. At once, as nothing of the page runs to write them again (a frozen
//     page's dedicated workers are frozen with it): its history is
//     dropped, the context's cookies are cleared, and every touched
//     origin's storage.
//
// The page stays frozen, holding its document (t.held), until the next
// render's navigation replaces that document (the back-forward cache is
// off, so it is discarded, with its frames, workers and timers); run then
// unfreezes the page. The page's pagehide, unload and beforeunload
// handlers do not run then either (guardJS stops them, with references the
// page cannot replace). A navigation to about:blank here instead cost a
// sixth of PRISM's renders/s at 4 tabs (bench/README.md); it is still made
// before a URL that could navigate within the held document (unhold).
//
// The steps within 3 and 4 run in parallel: each is a DevTools round
// trip, and the next render waits for the reset. An error means the tab
// must not be reused.
func (t *tab) reset(ctx context.Context, st *renderState) error {
	t.mu.Lock()
	t.state = nil
	t.mu.Unlock()
	if t.broken.Load() {
		return ErrPageCrashed
	}
	if err := t.hide(ctx); err != nil {
		return err
	}
	p := t.page.Context(ctx)
	// A document that was just arriving (a navigation of the page's own at
	// its capture) may be in a new frame host, not attached yet.
	if err := retryDetached(ctx, func() error {
		return proto.PageSetWebLifecycleState{State: proto.PageSetWebLifecycleStateStateFrozen}.Call(p)
	}); err != nil {
		return fmt.Errorf("reset freeze: %w", err)
	}
	var keys []string
	if err := parallel(
		func() error { return t.closeOthers(ctx) },
		func() (err error) { keys, err = t.clearSessionStorage(ctx, st); return err },
	); err != nil {
		return err
	}
	// The rest is independent, and each step a DevTools round trip: all at
	// once. The page stays frozen: the next render's navigation discards
	// its document (the back-forward cache is off), and only then is the
	// page unfrozen (unhold). Storage is cleared by key for the frames the
	// page had (a third-party frame's is partitioned under the page's
	// site), by origin for the other documents it loaded; a first-party
	// key is its origin's storage.
	step := func(what string, call func() error) func() error {
		return func() error {
			if err := retryDetached(ctx, call); err != nil {
				return fmt.Errorf("reset %s: %w", what, err)
			}
			return nil
		}
	}
	steps := []func() error{
		step("history", func() error { return proto.PageResetNavigationHistory{}.Call(p) }),
		step("cookies", func() error {
			return proto.StorageClearCookies{BrowserContextID: t.bctx.BrowserContextID}.Call(t.inst.b.Context(ctx))
		}),
	}
	covered := map[string]bool{}
	for _, k := range keys {
		covered[strings.TrimSuffix(k, "/")] = true
	}
	st.mu.Lock()
	for o := range st.origins {
		if !covered[o] {
			steps = append(steps, step("storage "+o, func() error {
				return proto.StorageClearDataForOrigin{Origin: o, StorageTypes: clearStorageTypes}.Call(p)
			}))
		}
	}
	st.mu.Unlock()
	for _, k := range keys {
		steps = append(steps, step("storage "+k, func() error {
			return proto.StorageClearDataForStorageKey{StorageKey: k, StorageTypes: clearStorageTypes}.Call(p)
		}))
	}
	if err := parallel(steps...); err != nil {
		return err
	}
	t.held = true
	return nil
}

// thaw unfreezes the page once the document the reset froze is gone. The
// freeze belongs to the page, not to its document: lifted, or the new
// document would stay frozen.
func (t *tab) thaw(ctx context.Context) error {
	p := t.page.Context(ctx)
	if err := retryDetached(ctx, func() error {
		return proto.PageSetWebLifecycleState{State: proto.PageSetWebLifecycleStateStateActive}.Call(p)
	}); err != nil {
		return fmt.Errorf("unfreeze: %w", err)
	}
	t.held = false
	return nil
}

// unhold discards the document the reset left frozen by a navigation to
// about:blank, and unfreezes the page.
func (t *tab) unhold(ctx context.Context) error {
	if err := t.blank(ctx); err != nil {
		return err
	}
	return t.thaw(ctx)
}

// blank navigates the tab to about:blank and drops its history.
func (t *tab) blank(ctx context.Context) error {
	p := t.page.Context(ctx)
	nav, err := proto.PageNavigate{URL: "about:blank"}.Call(p)
	if err != nil {
		return fmt.Errorf("blank navigate: %w", err)
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("blank navigate: %s", nav.ErrorText)
	}
	if err := retryDetached(ctx, func() error { return proto.PageResetNavigationHistory{}.Call(p) }); err != nil {
		return fmt.Errorf("blank history: %w", err)
	}
	return nil
}

// parallel runs fs at once and returns their errors, joined, once all
// returned.
func parallel(fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clearSessionStorage clears the session storage of every frame the page
// still has, and returns their storage keys. Session storage belongs to the
// tab (not to the browser context, whose cookies and storage are cleared by
// origin and key), and DevTools reaches it only through a frame that holds
// it: a render whose frames committed an origin none of them holds any more
// (a cross-origin navigation, a removed iframe) cannot be cleared, and its
// tab is replaced.
func (t *tab) clearSessionStorage(ctx context.Context, st *renderState) ([]string, error) {
	p := t.page.Context(ctx)
	tree, err := proto.PageGetFrameTree{}.Call(p)
	if err != nil {
		return nil, fmt.Errorf("reset frames: %w", err)
	}
	live := map[string]bool{}
	var keys []string
	var walk func(n *proto.PageFrameTree) error
	walk = func(n *proto.PageFrameTree) error {
		if n == nil || n.Frame == nil {
			return nil
		}
		if o := n.Frame.SecurityOrigin; storageOrigin(o) && !live[o] {
			live[o] = true
			key, err := proto.StorageGetStorageKeyForFrame{FrameID: n.Frame.ID}.Call(p)
			if err != nil {
				return fmt.Errorf("reset storage key %s: %w", o, err)
			}
			keys = append(keys, string(key.StorageKey))
			id := &proto.DOMStorageStorageID{StorageKey: proto.DOMStorageSerializedStorageKey(key.StorageKey)}
			if err := (proto.DOMStorageClear{StorageID: id}).Call(p); err != nil {
				return fmt.Errorf("reset session storage %s: %w", o, err)
			}
		}
		for _, c := range n.ChildFrames {
			if len(live) > 256 {
				break
			}
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(tree.FrameTree); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for o := range st.committed {
		if !live[o] {
			return nil, fmt.Errorf("reset session storage: %w: %s", errGoneOrigin, o)
		}
	}
	return keys, nil
}

// storageOrigin reports whether a frame's security origin holds storage
// (opaque and about: origins do not).
func storageOrigin(o string) bool {
	return o != "" && o != "null" && !strings.HasPrefix(o, "://")
}

// errGoneOrigin means a render left session storage that no frame holds.
var errGoneOrigin = errors.New("prerender: an origin the page committed has no frame left")

// pageOwned reports the target types a page can open and the reset closes:
// pages (popups, windows), shared and service workers. Dedicated workers
// cannot be closed (Target.closeTarget refuses them): they end with the
// document that started them, which the reset's about:blank discards. The
// browser's own UI targets in the tab's window (its omnibox popup) are
// not the page's.
func pageOwned(typ proto.TargetTargetInfoType) bool {
	switch typ {
	case proto.TargetTargetInfoTypePage, proto.TargetTargetInfoTypeSharedWorker, proto.TargetTargetInfoTypeServiceWorker:
		return true
	}
	return false
}

// retryDetached calls f until it does not fail with DevTools' "Not
// attached to an active page" (the page is between two frame hosts), for
// up to a second.
func retryDetached(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := f()
		if err == nil || !strings.Contains(err.Error(), "Not attached to an active page") || time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, 2*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// closeOthers closes every target of the tab's browser context but its
// page: popups and windows a render opened (browser.go closes them as
// they appear too; this is the guarantee before the next render).
func (t *tab) closeOthers(ctx context.Context) error {
	b := t.inst.b.Context(ctx)
	list, err := proto.TargetGetTargets{}.Call(b)
	if err != nil {
		return fmt.Errorf("reset targets: %w", err)
	}
	for _, ti := range list.TargetInfos {
		if ti.BrowserContextID != t.bctx.BrowserContextID || ti.TargetID == t.page.TargetID || !pageOwned(ti.Type) {
			continue
		}
		if _, err := (proto.TargetCloseTarget{TargetID: ti.TargetID}).Call(b); err != nil {
			return fmt.Errorf("reset close %s %s: %w", ti.Type, ti.TargetID, err)
		}
		t.inst.r.metrics.popupClosed()
	}
	return nil
}

// guardJS runs in every document of every frame before the page's own
// scripts. Its capture listeners on the window are the first listeners of
// their events, and stop every other one: so the page's handlers for the
// end of its document's life (and for the freeze of its reset) never run,
// whether a later render's navigation or the reset unloads it. Were they to
// run then, what they write (cookies, storage, a beacon carrying them)
// could land after the reset cleared it. It keeps its own references to
// what it calls, taken before any page script: a page that replaces
// addEventListener, stopImmediatePropagation or Reflect.apply changes
// nothing, and no page script can reach its listener to remove it. (An
// isolated world would do the same at the price of a second JavaScript
// context per document: measurably slower, bench/README.md.)
const guardJS = `(() => {
	const apply = Reflect.apply, add = EventTarget.prototype.addEventListener, sip = Event.prototype.stopImmediatePropagation;
	const stop = (e) => apply(sip, e, []);
	for (const t of ['pagehide', 'unload', 'beforeunload', 'pageswap', 'freeze', 'resume']) {
		apply(add, globalThis, [t, stop, true]);
	}
})()`

// clearStorageTypes are cleared for every document origin after a render.
// Cookies go with Storage.clearCookies for the whole context.
const clearStorageTypes = "local_storage,indexeddb,cache_storage,service_workers,file_systems,websql,shared_storage,storage_buckets"

package prerender

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
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

	emu        emulation // last applied viewport and UA
	oldLoaders map[proto.NetworkLoaderID]bool

	window proto.BrowserWindowID // the tab's own window
	visMu  sync.Mutex            // serializes hide and show
	shown  bool                  // the window is not minimized
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
	inflight     map[proto.NetworkRequestID]bool
	lastActivity time.Time
	origins      map[string]bool // document origins to clear afterwards
	stale        map[proto.NetworkLoaderID]bool

	frames    []proto.RuntimeExecutionContextID // main worlds of subframe documents
	shown     atomic.Bool                       // the tab was shown during this render
	showAsked atomic.Bool                       // the page asked to be shown
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

func (st *renderState) started(e *proto.NetworkRequestWillBeSent, now time.Time) {
	if e.Type == proto.NetworkResourceTypeWebSocket || e.Type == proto.NetworkResourceTypeEventSource {
		return // long-lived by design; they do not keep a page from being quiet
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stale[e.LoaderID] {
		return
	}
	st.inflight[e.RequestID] = true
	st.lastActivity = now
}

func (st *renderState) finished(id proto.NetworkRequestID, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inflight[id] {
		delete(st.inflight, id)
		st.lastActivity = now
	}
}

// addContext records the main world of a subframe document, which
// tab.reset retires along with the main frame's.
func (st *renderState) addContext(c *proto.RuntimeExecutionContextDescription) {
	if c == nil || !c.AuxData["isDefault"].Bool() || c.AuxData["frameId"].Str() == string(st.mainFrame) {
		return
	}
	st.mu.Lock()
	if len(st.frames) < 256 {
		st.frames = append(st.frames, c.ID)
	}
	st.mu.Unlock()
}

// touch counts now as network activity: the quiet period starts again.
func (st *renderState) touch(now time.Time) {
	st.mu.Lock()
	st.lastActivity = now
	st.mu.Unlock()
}

// quiet reports whether no request has been in flight for d.
func (st *renderState) quiet(now time.Time, d time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.inflight) == 0 && now.Sub(st.lastActivity) >= d
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
	t := &tab{inst: inst, bctx: ib, page: page, oldLoaders: map[proto.NetworkLoaderID]bool{}}
	events := page.Event() // subscribe before enabling the domains
	inst.wg.Add(1)
	go func() {
		defer inst.wg.Done()
		t.loop(events)
	}()
	p := page.Context(ctx)
	setup := []proto.Request{
		proto.NetworkEnable{},
		proto.NetworkSetCacheDisabled{CacheDisabled: true},
		proto.NetworkSetBypassServiceWorker{Bypass: true},
		proto.FetchEnable{Patterns: []*proto.FetchRequestPattern{{URLPattern: "*", RequestStage: proto.FetchRequestStageRequest}}},
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

// close disposes of the tab's browser context (and so its page).
func (t *tab) close() {
	ctx, cancel := context.WithTimeout(t.inst.ctx, 2*time.Second)
	defer cancel()
	_ = proto.TargetDisposeBrowserContext{BrowserContextID: t.bctx.BrowserContextID}.Call(t.inst.b.Context(ctx))
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
			t.inst.wg.Add(1)
			go func() {
				defer t.inst.wg.Done()
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
		case "Runtime.executionContextCreated":
			var e proto.RuntimeExecutionContextCreated
			if st := t.current(); st != nil && msg.Load(&e) {
				st.addContext(e.Context)
			}
		case "Network.requestWillBeSent":
			var e proto.NetworkRequestWillBeSent
			if st := t.current(); st != nil && msg.Load(&e) {
				st.started(&e, r.opts.Now())
			}
		case "Network.loadingFinished":
			var e proto.NetworkLoadingFinished
			if st := t.current(); st != nil && msg.Load(&e) {
				st.finished(e.RequestID, r.opts.Now())
			}
		case "Network.loadingFailed":
			var e proto.NetworkLoadingFailed
			if st := t.current(); st != nil && msg.Load(&e) {
				st.finished(e.RequestID, r.opts.Now())
			}
		}
	}
}

func (t *tab) current() *renderState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// begin installs the state of a new render.
func (t *tab) begin(ctx context.Context, pub *url.URL) *renderState {
	st := &renderState{
		ctx: ctx, pub: pub, mainFrame: t.page.FrameID,
		inflight: map[proto.NetworkRequestID]bool{}, origins: map[string]bool{},
		lastActivity: t.inst.r.opts.Now(), stale: maps.Clone(t.oldLoaders),
	}
	t.mu.Lock()
	t.state = st
	t.mu.Unlock()
	return st
}

// reset ends a render and clears everything the page could leave behind
// for the next one. The page is frozen first (Page.setWebLifecycleState):
// its scripts, timers and callbacks stop, and never run again, because the
// next render's navigation replaces the frozen document (the back-forward
// cache is off, so the old document is discarded, not kept). Then its
// session storage is cleared from inside, and the context's cookies and
// every touched origin's storage from outside. Freezing where a navigation
// to about:blank used to be saves Chromium a whole navigation per render,
// about 100 ms of CPU (bench/README.md). An error means the tab must not be
// reused.
func (t *tab) reset(ctx context.Context, st *renderState, loader proto.NetworkLoaderID) error {
	t.mu.Lock()
	t.state = nil
	t.mu.Unlock()
	if loader != "" {
		if len(t.oldLoaders) > 64 {
			clear(t.oldLoaders)
		}
		t.oldLoaders[loader] = true
	}
	if err := t.hide(ctx); err != nil {
		return err
	}
	p := t.page.Context(ctx)
	if err := (proto.PageSetWebLifecycleState{State: proto.PageSetWebLifecycleStateStateFrozen}).Call(p); err != nil {
		return fmt.Errorf("reset freeze: %w", err)
	}
	st.mu.Lock()
	frames := slices.Clone(st.frames)
	st.mu.Unlock()
	for _, id := range frames { // gone with their frame already: no matter
		_, _ = proto.RuntimeEvaluate{Expression: retireJS, ContextID: id}.Call(p)
	}
	if _, err := (proto.RuntimeEvaluate{Expression: retireJS}).Call(p); err != nil {
		return fmt.Errorf("reset page: %w", err)
	}
	if err := (proto.StorageClearCookies{BrowserContextID: t.bctx.BrowserContextID}).Call(t.inst.b.Context(ctx)); err != nil {
		return fmt.Errorf("reset cookies: %w", err)
	}
	st.mu.Lock()
	origins := make([]string, 0, len(st.origins))
	for o := range st.origins {
		origins = append(origins, o)
	}
	st.mu.Unlock()
	for _, o := range origins {
		err := proto.StorageClearDataForOrigin{Origin: o, StorageTypes: clearStorageTypes}.Call(p)
		if err != nil {
			return fmt.Errorf("reset storage %s: %w", o, err)
		}
	}
	return nil
}

// clearStorageTypes are cleared for every document origin after a render.
// Cookies go with Storage.clearCookies for the whole context.
const clearStorageTypes = "local_storage,indexeddb,cache_storage,service_workers,file_systems,websql,shared_storage,storage_buckets"

// retireJS runs in the frozen document (and in each of its frames) after
// its render. It drops the listeners that would run when the document is
// unloaded (recorded by showHookJS), clears the storage only the page can
// reach (sessionStorage belongs to the tab, not the context), and marks the
// document as retired. A navigation that commits no new document (a 204,
// a 205, a download) fails Page.navigate with net::ERR_ABORTED today
// (TestNoNewDocument); the mark is the guard should one ever return without
// an error: loadedJS then fails the render rather than capture the old page
// again.
const retireJS = `(() => {
	try { globalThis[Symbol.for('prism.retire')](); } catch (e) {}
	try { localStorage.clear() } catch (e) {}
	try { sessionStorage.clear() } catch (e) {}
	globalThis[` + "`" + retiredMark + "`" + `] = true;
})()`

// retiredMark is the global retireJS sets in a document done with.
const retiredMark = "__prismRetired"

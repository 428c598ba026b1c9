package prerender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-rod/rod/lib/proto"
)

const (
	quietPeriod   = 500 * time.Millisecond // no request in flight this long: network quiet
	pollInterval  = 20 * time.Millisecond
	captureBudget = 750 * time.Millisecond // extra time for the capture after the timeout
	resetTimeout  = 5 * time.Second
	// warmRenderTimeout bounds a tab's warm-up render (Options.WarmPath):
	// a slow origin delays the browser's first render by at most this.
	warmRenderTimeout = 5 * time.Second
)

var (
	errTimeout = errors.New("prerender: render timed out before the document loaded")
	errNoDoc   = errors.New("prerender: the navigation committed no document")
)

// renderOn renders req on slot s of inst's pool and gives s back to the
// pool once the tab is clean again (in the background: the caller does not
// wait for the reset).
func (inst *instance) renderOn(ctx context.Context, s *slot, pub *url.URL, req Request) (*Result, outcome, error) {
	r := inst.r
	// Renders in flight fail fast when the browser goes down.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(inst.ctx, func() { cancel(context.Cause(inst.ctx)) })
	defer stop()
	down := func(err error) (*Result, outcome, error) {
		if c := context.Cause(ctx); c != nil && errors.Is(c, ErrUnavailable) {
			return nil, outcomeUnavailable, c
		}
		return nil, outcomeError, err
	}
	tctx, tcancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer tcancel()
	rctx, rcancel := context.WithCancelCause(tctx) // rcancel(ErrPageCrashed): its renderer crashed
	defer rcancel(nil)

	if s.tab != nil && s.tab.broken.Load() {
		// Its renderer crashed while it waited for a render (Chromium
		// reaps an idle renderer under memory pressure, or a page's
		// leftovers crashed it): a fresh tab, not a failed render.
		s.tab.close()
		s.tab = nil
	}
	if s.tab == nil {
		t, err := inst.newTab(rctx)
		if err != nil {
			inst.pool.release(s)
			return down(err)
		}
		s.tab = t
	}
	t := s.tab
	st := t.begin(rctx, rcancel, pub)
	defer func() {
		rcancel(nil)
		inst.wg.Add(1) // safe: the tab's event loop holds a count
		go func() {
			defer inst.wg.Done()
			inst.finish(s, st)
		}()
	}()

	res, oc, err := t.run(ctx, rctx, st, req)
	if t.broken.Load() || errors.Is(context.Cause(rctx), ErrPageCrashed) {
		return nil, outcomeCrashed, ErrPageCrashed
	}
	if err != nil {
		if errors.Is(err, errTimeout) {
			return nil, outcomeTimeout, err
		}
		return down(err)
	}
	return res, oc, nil
}

// finish clears slot s's tab for the next render (or drops it when that
// fails) and returns s to the pool.
func (inst *instance) finish(s *slot, st *renderState) {
	defer inst.pool.release(s)
	t := s.tab
	if inst.r.freshTabs || t.broken.Load() {
		t.close()
		s.tab = nil
		return
	}
	ctx, cancel := context.WithTimeout(inst.ctx, resetTimeout)
	defer cancel()
	if err := t.reset(ctx, st); err != nil {
		if inst.ctx.Err() == nil {
			inst.r.log.Warn("tab reset failed: replacing the tab", "err", err)
		}
		t.close()
		s.tab = nil
	}
}

// run navigates, waits and captures. ctx is the caller's (plus browser
// liveness), rctx the same bounded by the render timeout.
func (t *tab) run(ctx, rctx context.Context, st *renderState, req Request) (*Result, outcome, error) {
	r := t.inst.r
	if r.opts.AlwaysVisible {
		if _, err := t.show(rctx, st); err != nil {
			return nil, outcomeError, err
		}
	}
	if err := t.emulate(rctx, req); err != nil {
		return nil, outcomeError, fmt.Errorf("emulate: %w", err)
	}
	p := t.page.Context(rctx)
	// The tab holds the frozen document of its last render (or an
	// about:blank). A URL with a fragment (a hashbang: parsePublicURL
	// drops the others) may differ from that document's own only by it,
	// which would be a navigation within that document, seen by its
	// scripts: such a URL gets an about:blank first, whatever the held
	// document's URL (the page may have moved it, and the browser spells
	// URLs its own way).
	if t.held && st.pub.Fragment != "" {
		if err := t.unhold(rctx); err != nil {
			return nil, outcomeError, err
		}
	}
	navStart := time.Now()
	nav, navErr := proto.PageNavigate{URL: st.pub.String()}.Call(p)
	if t.held && navErr == nil && nav.ErrorText == "" && nav.LoaderID == "" {
		// A navigation within the held document after all (no known
		// navigation gets here: a guard): discarded, and loaded anew.
		if err := t.unhold(rctx); err != nil {
			return nil, outcomeError, err
		}
		nav, navErr = proto.PageNavigate{URL: st.pub.String()}.Call(p)
	}
	if t.held && navErr == nil && nav.ErrorText == "" {
		// The old document is gone: the page may run again. Its history
		// goes first, before the new document's scripts can read it.
		if err := retryDetached(rctx, func() error { return proto.PageResetNavigationHistory{}.Call(p) }); err != nil {
			return nil, outcomeError, fmt.Errorf("history: %w", err)
		}
		if err := t.thaw(rctx); err != nil {
			return nil, outcomeError, err
		}
	}
	m := st.mainDoc()
	if m != nil && m.location != "" {
		h := http.Header{}
		h.Set("Location", m.location)
		return &Result{Status: m.status, Header: h}, outcomeRedirect, nil
	}
	if m != nil && m.err != nil {
		if errors.Is(m.err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, outcomeError, fmt.Errorf("%w: %w", errTimeout, m.err)
		}
		return nil, outcomeError, fmt.Errorf("main document: %w", m.err)
	}
	if navErr != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			return nil, outcomeError, fmt.Errorf("%w: navigate: %w", errTimeout, navErr)
		}
		return nil, outcomeError, fmt.Errorf("navigate: %w", navErr)
	}
	status, header := http.StatusOK, http.Header{}
	if m != nil {
		status = m.status
		if ct := m.header.Get("Content-Type"); ct != "" {
			header.Set("Content-Type", ct)
		}
	}
	if status >= 500 {
		return &Result{Status: status, Header: header}, outcomeErrorStatus, nil
	}
	if nav.ErrorText != "" {
		if m != nil && status >= 400 { // an empty error page from the origin
			return &Result{Status: status, Header: header}, outcomeErrorStatus, nil
		}
		return nil, outcomeError, fmt.Errorf("navigate: %s", nav.ErrorText)
	}

	partial := false
	ended, err := t.waitShown(rctx, st)
	if err != nil {
		// Only the render timeout makes a partial capture; a crash or the
		// caller going away ends the render.
		if !errors.Is(context.Cause(rctx), context.DeadlineExceeded) || ctx.Err() != nil {
			return nil, outcomeError, fmt.Errorf("wait: %w", err)
		}
		partial, ended = true, EndedTimeout
	}
	settle := time.Since(navStart)

	// The capture may overrun the render timeout by captureBudget.
	dl, _ := rctx.Deadline()
	cctx, ccancel := context.WithDeadline(ctx, dl.Add(captureBudget))
	defer ccancel()
	c, err := t.capture(cctx, r.keepTypes)
	if err != nil {
		return nil, outcomeError, fmt.Errorf("capture: %w", err)
	}
	if c.Blank {
		return nil, outcomeBlank, ErrBlank
	}
	header.Set("Content-Type", "text/html; charset=utf-8")
	status, header = applyMeta(st.pub, status, header, c.Metas)
	overLimit := st.overLimit.Load()
	res := &Result{Status: status, Header: header, HTML: []byte(c.HTML), Partial: partial || overLimit, Shown: st.shown.Load(),
		Ended: ended, Settle: settle}
	oc := outcomeOK
	switch {
	case isRedirect(status) && header.Get("Location") != "":
		res.HTML = nil
		oc = outcomeRedirect
	case overLimit:
		// Some of what the page asked for was refused: not the page as a
		// browser shows it, so served as partial, never over a complete entry.
		oc = outcomeOverLimit
	case partial:
		oc = outcomePartial
	case status >= 400:
		oc = outcomeErrorStatus
	}
	return res, oc, nil
}

// emulate applies req's viewport, touch and user agent when they differ
// from the tab's last render.
func (t *tab) emulate(ctx context.Context, req Request) error {
	e := emulation{width: req.Width, height: req.Height, mobile: req.Mobile, ua: req.UserAgent}
	if e.width <= 0 || e.height <= 0 {
		e.width, e.height = 1366, 768
		if e.mobile {
			e.width, e.height = 412, 915
		}
	}
	if e.ua == "" {
		e.ua = t.inst.uaDesk
		if e.mobile {
			e.ua = t.inst.uaMob
		}
	}
	if e == t.emu {
		return nil
	}
	p := t.page.Context(ctx)
	scale := 1.0
	if e.mobile {
		scale = 2.625
	}
	err := proto.EmulationSetDeviceMetricsOverride{
		Width: e.width, Height: e.height, DeviceScaleFactor: scale, Mobile: e.mobile,
	}.Call(p)
	if err != nil {
		return err
	}
	touch := proto.EmulationSetTouchEmulationEnabled{Enabled: e.mobile}
	if e.mobile {
		five := 5
		touch.MaxTouchPoints = &five
	}
	if err := touch.Call(p); err != nil {
		return err
	}
	platform := "Linux x86_64"
	if e.mobile {
		platform = "Linux armv8l"
	}
	if err := (proto.NetworkSetUserAgentOverride{UserAgent: e.ua, Platform: platform}).Call(p); err != nil {
		return err
	}
	t.emu = e
	return nil
}

// loadedJS resolves once the document has loaded, with "flag" when the page
// declared window.prerenderReady = false (it will say when it is ready),
// "ready" when it already set it to true, else "idle". "retired" means the
// navigation committed no document and the tab still shows an about:blank
// (location cannot be replaced by a page); no navigation known today gets
// there (TestNoNewDocument), it is a guard. A navigation that commits no
// document where the tab holds the last render's frozen document fails
// before (Page.navigate's error, or no loader: run), and the page is not
// unfrozen.
var loadedJS = `new Promise(r => { const T = globalThis.` + doneKey + `Timer || setTimeout; (function c() {
	if (location.href === 'about:blank') return r('retired');
	if (document.readyState === 'complete') {
		const f = window.prerenderReady;
		return r(f === false ? 'flag' : (f === true ? 'ready' : 'idle'));
	}
	T(c, 5);
})(); })`

// loadAgoJS is how many ms ago the document's load event started, or -1
// when it has not (or the page hid it).
const loadAgoJS = `(() => { try { const n = performance.getEntriesByType('navigation')[0];
	if (n.loadEventStart > 0) return String(Math.max(0, performance.now() - n.loadEventStart)); } catch (e) {} return '-1'; })()`

// readyJS resolves once the page set window.prerenderReady = true. Both
// poll with the timer the page had before its scripts ran (doneHookJS).
var readyJS = `new Promise(r => { const T = globalThis.` + doneKey + `Timer || setTimeout; (function c() {
	if (window.prerenderReady === true) return r(true);
	T(c, 5);
})(); })`

// wait returns when the page is ready (prerenderReady) or done by its
// signals or the quiet rule (settle), or with ctx's error. ended says which.
func (t *tab) wait(ctx context.Context, st *renderState) (ended string, err error) {
	mode, err := t.evalString(ctx, loadedJS)
	if err != nil {
		return "", err
	}
	if mode == "idle" {
		// The page answers after the question left, so the load came
		// no earlier than ago before the time it was sent. What the page
		// says is its own to get wrong: it changes only when its own
		// render ends.
		sent := t.inst.r.opts.Now()
		if ago, err := t.evalString(ctx, loadAgoJS); err == nil {
			if ms, err := strconv.ParseFloat(ago, 64); err == nil && ms >= 0 && ms < 1e6 {
				st.loaded(sent.Add(-time.Duration(ms * float64(time.Millisecond))))
			}
		}
	}
	switch mode {
	case "retired":
		return "", errNoDoc
	case "ready":
		return EndedReady, nil
	case "flag":
		_, err := t.evalString(ctx, readyJS)
		return EndedReady, err
	}
	return t.settle(ctx, st)
}

// waitShown is wait, then, for a page that stayed hidden but holds lazy
// images or iframes (which load only when shown), shows it. A shown page
// that did not say when it is ready is then scrolled through to its end
// and back (scrollJS), so that content it loads when scrolled into view
// (IntersectionObserver sections, lazy frames) below the first viewport is
// there too, and waited for until it is done again. A hidden page observes
// nothing and is not scrolled: ordinary pages pay nothing.
func (t *tab) waitShown(ctx context.Context, st *renderState) (ended string, err error) {
	ended, err = t.wait(ctx, st)
	if err != nil {
		return "", err
	}
	idle := ended != EndedReady
	if !t.isShown() {
		lazy, err := t.evalString(ctx, lazyJS)
		if err != nil || lazy != "true" {
			return ended, err
		}
		shown, err := t.show(ctx, st)
		if err != nil || !shown {
			return ended, err
		}
	}
	if !idle {
		_, err := t.settle(ctx, st) // what showing it loads
		return ended, err
	}
	// shown by now
	if _, err := t.evalString(ctx, scrollJS); err != nil {
		return ended, err
	}
	return t.settle(ctx, st)
}

// scrollJS scrolls the page a viewport at a time to its end (at most 40
// steps, two frames each, with a timer in case the page replaced
// requestAnimationFrame), then back to the top, and waits two more frames:
// callbacks the page queued for its first frames after it was shown have
// run, however slow those frames were to come. Each frame's spare timer
// is cleared, so that none is left for the done-detection to wait for.
const scrollJS = `new Promise(async (r) => {
	const se = document.scrollingElement || document.documentElement;
	const frame = () => new Promise((f) => {
		let id = 0;
		const done = () => { clearTimeout(id); f(); };
		try { requestAnimationFrame(done); } catch (e) {}
		id = setTimeout(done, 50);
	});
	const step = Math.max(innerHeight, 200);
	let n = 0;
	for (let y = step; se && y < se.scrollHeight && n < 40; y += step, n++) { scrollTo(0, y); await frame(); await frame(); }
	if (n > 0) scrollTo(0, 0);
	await frame(); await frame(); // what the page asked frames for has run
	r(n);
})`

// evalString evaluates a promise-returning expression in the page. A
// navigation inside the page (a JS redirect) destroys the context: retry.
func (t *tab) evalString(ctx context.Context, expr string) (string, error) {
	var last error
	for range 5 {
		res, err := proto.RuntimeEvaluate{Expression: expr, AwaitPromise: true, ReturnByValue: true}.Call(t.page.Context(ctx))
		if err == nil && res.ExceptionDetails != nil {
			err = fmt.Errorf("page exception: %s", res.ExceptionDetails.Text)
		}
		if err == nil {
			if res.Result.Value.Nil() {
				return "", nil
			}
			return fmt.Sprint(res.Result.Value.Val()), nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		last = err
		if !sleepCtx(ctx, pollInterval) {
			return "", ctx.Err()
		}
	}
	return "", last
}

// captured is what captureJS returns.
type captured struct {
	HTML  string      `json:"html"`
	Metas [][2]string `json:"metas"`
	Blank bool        `json:"blank"`
}

// captureJS turns the live document into what a crawler is served, the
// page as a person's browser shows it:
//
//   - open shadow roots (nested ones too) are serialized as declarative
//     shadow DOM (<template shadowrootmode="open">), which HTML parsers
//     that know it rebuild and text extractors read;
//   - form state set by script (value, checked, selected, a textarea's
//     text) is written into the markup; password and file inputs are not;
//   - scripts are removed, except kept types (JSON-LD), also inside shadow
//     roots;
//   - the status and header meta tags are read (in document order) and
//     removed, as prerender does;
//   - charset declarations say UTF-8, which is what is served.
//
// It reports the page blank when its body holds no text and no element and
// its head carries no link-preview metadata (a description, Open Graph or
// Twitter tags, a canonical link): an empty shell, a spinner-less error.
const captureJS = `((keep) => {
	const k = new Set(keep);
	const roots = [];
	const walk = (scope) => {
		for (const el of scope.querySelectorAll('*')) {
			const sr = el.shadowRoot; // open roots only
			if (sr && roots.length < 10000) { roots.push(sr); walk(sr); }
		}
	};
	walk(document);
	for (const scope of [document, ...roots]) {
		for (const s of Array.from(scope.querySelectorAll('script'))) {
			const t = (s.getAttribute('type') || '').split(';')[0].trim().toLowerCase();
			if (!k.has(t)) s.remove();
		}
		for (const el of scope.querySelectorAll('input, textarea, option')) {
			try {
				if (el.localName === 'option') {
					if (el.selected) el.setAttribute('selected', ''); else el.removeAttribute('selected');
				} else if (el.localName === 'textarea') {
					el.textContent = el.value;
				} else {
					const t = (el.getAttribute('type') || 'text').toLowerCase();
					if (t === 'checkbox' || t === 'radio') {
						if (el.checked) el.setAttribute('checked', ''); else el.removeAttribute('checked');
					} else if (t !== 'password' && t !== 'file') {
						el.setAttribute('value', el.value);
					}
				}
			} catch (e) {}
		}
	}
	const names = new Set(['prerender-status-code', 'prerender-header', 'render:status_code', 'render:header']);
	const metas = [];
	for (const m of Array.from(document.getElementsByTagName('meta'))) {
		for (const a of ['name', 'property']) {
			const n = (m.getAttribute(a) || '').trim().toLowerCase();
			if (names.has(n)) { metas.push([n, m.getAttribute('content') || '']); m.remove(); break; }
		}
	}
	for (const m of Array.from(document.querySelectorAll('meta[charset]'))) m.setAttribute('charset', 'utf-8');
	for (const m of Array.from(document.querySelectorAll('meta[http-equiv]'))) {
		if ((m.getAttribute('http-equiv') || '').trim().toLowerCase() === 'content-type') m.setAttribute('content', 'text/html; charset=utf-8');
	}
	const b = document.body;
	const head = document.head;
	const preview = !!(head && head.querySelector('meta[name="description" i], meta[property^="og:" i], meta[name^="og:" i], meta[name^="twitter:" i], link[rel~="canonical" i]'));
	const blank = (!b || (b.textContent.trim() === '' && b.children.length === 0)) && !preview;
	const de = document.documentElement;
	let html = '';
	if (de) {
		const open = de.cloneNode(false).outerHTML.replace(/<\/html>$/i, '');
		const inner = typeof de.getHTML === 'function' ? de.getHTML({serializableShadowRoots: true, shadowRoots: roots}) : de.innerHTML;
		html = open + inner + '</html>';
	}
	const dt = document.doctype ? new XMLSerializer().serializeToString(document.doctype) : '';
	return {html: dt + html, metas, blank};
})(%s)`

func (t *tab) capture(ctx context.Context, keep []string) (*captured, error) {
	k, err := json.Marshal(keep)
	if err != nil {
		return nil, err
	}
	expr := fmt.Sprintf(captureJS, k)
	res, err := proto.RuntimeEvaluate{Expression: expr, ReturnByValue: true}.Call(t.page.Context(ctx))
	if err != nil {
		return nil, err
	}
	if res.ExceptionDetails != nil {
		return nil, fmt.Errorf("page exception: %s", res.ExceptionDetails.Text)
	}
	var c captured
	if err := res.Result.Value.Unmarshal(&c); err != nil {
		return nil, fmt.Errorf("decode capture: %w", err)
	}
	if strings.TrimSpace(c.HTML) == "" {
		c.Blank = true
	}
	return &c, nil
}

package prerender

import (
	"context"
	"fmt"

	"github.com/go-rod/rod/lib/proto"
)

// Pages render hidden unless they need to be shown.
//
// A shown page is laid out, painted and rastered on every frame; a hidden
// one (its window minimized) is not, and costs Chromium about half the CPU
// per render. But only a shown page gets animation frames: in a hidden page
// requestAnimationFrame callbacks, IntersectionObserver and ResizeObserver
// never run, nor CSS animation and transition events, and lazy images never
// load. So every tab starts each render with its window minimized, and
// showHookJS, run in every document before the page's own scripts, reports
// through the showBinding function the first time the page uses one of
// those APIs (or reads its visibility). The tab's window is then restored
// for the rest of the render, before the page's request can be answered:
// the callbacks it queued run in the first frame. A page that never uses
// them renders the same either way, because nothing it does depends on a
// frame. Options.AlwaysVisible shows every tab for its whole render (the
// window is still minimized between renders: see hide).

// showBinding is the page function showHookJS calls (via Runtime.addBinding).
const showBinding = "__prismShow"

// showHookJS wraps the frame-dependent APIs in transparent proxies (their
// toString, name and length stay native) that call showBinding once per
// document. Nothing of PRISM's isolation depends on it (a page may replace
// any of it: it only decides whether that page's own render is painted).
const showHookJS = `(() => {
	const w = globalThis;
	// Captured before any page script runs: a page that replaces them later
	// does not break the wrappers (and so its own listeners).
	const apply = Reflect.apply, has = Set.prototype.has, lower = String.prototype.toLowerCase, str = String;
	let sent = false;
	const show = () => {
		if (sent) return;
		try { w.` + showBinding + `('1'); sent = true; } catch (e) {}
	};
	const trap = { apply(f, self, args) { show(); return apply(f, self, args); } };
	const method = (o, k) => {
		const d = o && Object.getOwnPropertyDescriptor(o, k);
		if (d && typeof d.value === 'function') Object.defineProperty(o, k, { ...d, value: new Proxy(d.value, trap) });
	};
	const accessor = (o, k, which) => {
		const d = o && Object.getOwnPropertyDescriptor(o, k);
		if (d && typeof d[which] === 'function') Object.defineProperty(o, k, { ...d, [which]: new Proxy(d[which], trap) });
	};
	const proto = (c) => w[c] && w[c].prototype;
	method(w, 'requestAnimationFrame');
	method(w, 'webkitRequestAnimationFrame');
	method(proto('IntersectionObserver'), 'observe');
	method(proto('ResizeObserver'), 'observe');
	method(proto('Element'), 'animate');
	method(proto('Document'), 'hasFocus');
	method(proto('Document'), 'startViewTransition');
	method(proto('HTMLVideoElement'), 'requestVideoFrameCallback');
	for (const k of ['visibilityState', 'hidden', 'webkitVisibilityState', 'webkitHidden']) accessor(proto('Document'), k, 'get');
	const types = ['animationstart', 'animationend', 'animationiteration', 'animationcancel',
		'transitionrun', 'transitionstart', 'transitionend', 'transitioncancel',
		'webkitanimationstart', 'webkitanimationend', 'webkitanimationiteration', 'webkittransitionend'];
	const typeSet = new Set(types);
	const et = proto('EventTarget');
	const add = et && Object.getOwnPropertyDescriptor(et, 'addEventListener');
	if (add && typeof add.value === 'function') {
		Object.defineProperty(et, 'addEventListener', { ...add, value: new Proxy(add.value, { apply(f, self, args) {
			try { if (apply(has, typeSet, [apply(lower, str(args[0]), [])])) show(); } catch (e) {}
			return apply(f, self, args);
		} }) });
	}
	for (const o of [w, proto('Document'), proto('HTMLElement'), proto('SVGElement')]) {
		for (const t of types) accessor(o, 'on' + t, 'set');
	}
})()`

// lazyJS tells whether the document holds lazy-loading images or iframes,
// which load only in a shown page.
const lazyJS = `!!document.querySelector('img[loading=lazy i], iframe[loading=lazy i]')`

// setupVisibility installs the hook and minimizes the tab's window, or
// (always visible) only records the window.
func (t *tab) setupVisibility(ctx context.Context) error {
	b := t.inst.b.Context(ctx)
	win, err := proto.BrowserGetWindowForTarget{TargetID: t.page.TargetID}.Call(b)
	if err != nil {
		return fmt.Errorf("window for tab: %w", err)
	}
	t.window = win.WindowID
	t.shown = true // a new window is shown
	p := t.page.Context(ctx)
	// Runtime.bindingCalled is sent only with the Runtime domain enabled.
	if err := (proto.RuntimeEnable{}).Call(p); err != nil {
		return fmt.Errorf("runtime enable: %w", err)
	}
	if err := (proto.RuntimeAddBinding{Name: showBinding}).Call(p); err != nil {
		return fmt.Errorf("add binding: %w", err)
	}
	// The guard first: its listeners must precede any other.
	if _, err := (proto.PageAddScriptToEvaluateOnNewDocument{Source: guardJS}).Call(p); err != nil {
		return fmt.Errorf("add guard: %w", err)
	}
	// The done hook before the show hook: it captures the native APIs the
	// show hook wraps (the page's calls go through both).
	if _, err := (proto.PageAddScriptToEvaluateOnNewDocument{Source: doneHookJS}).Call(p); err != nil {
		return fmt.Errorf("add done hook: %w", err)
	}
	if _, err := (proto.PageAddScriptToEvaluateOnNewDocument{Source: showHookJS}).Call(p); err != nil {
		return fmt.Errorf("add hook: %w", err)
	}
	if t.inst.r.opts.AlwaysVisible {
		return nil // run shows the tab before each navigation
	}
	return t.hide(ctx)
}

// setWindow minimizes or restores the tab's window.
func (t *tab) setWindow(ctx context.Context, state proto.BrowserWindowState) error {
	return proto.BrowserSetWindowBounds{WindowID: t.window, Bounds: &proto.BrowserBounds{WindowState: state}}.Call(t.inst.b.Context(ctx))
}

// hide minimizes the tab's window if it is shown (between renders). With
// AlwaysVisible too: a document that replaces a frozen one starts hidden
// however the window is, and restoring the window is what shows it.
func (t *tab) hide(ctx context.Context) error {
	t.visMu.Lock()
	defer t.visMu.Unlock()
	if !t.shown {
		return nil
	}
	if err := t.setWindow(ctx, proto.BrowserWindowStateMinimized); err != nil {
		return fmt.Errorf("hide tab: %w", err)
	}
	t.shown = false
	return nil
}

// show restores the window of the tab rendering st, if st is still its
// render. It reports whether the tab is shown.
func (t *tab) show(ctx context.Context, st *renderState) (bool, error) {
	t.visMu.Lock()
	defer t.visMu.Unlock()
	if st == nil || t.current() != st {
		return t.shown, nil
	}
	if !t.shown {
		if err := t.setWindow(ctx, proto.BrowserWindowStateNormal); err != nil {
			return false, fmt.Errorf("show tab: %w", err)
		}
		t.shown = true
		st.touch(t.inst.r.opts.Now())
	}
	st.shown.Store(true)
	return true, nil
}

// isShown reports whether the tab's window is shown now.
func (t *tab) isShown() bool {
	t.visMu.Lock()
	defer t.visMu.Unlock()
	return t.shown
}

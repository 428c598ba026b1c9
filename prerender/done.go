package prerender

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Knowing when a page is done.
//
// A page that does not set window.prerenderReady is done when it does
// nothing more that could change what is captured. Two rules end its wait,
// whichever holds first:
//
//   - idle: nothing the page started is still going, by its own signals
//     (doneHookJS, in every document before the page's scripts) and by the
//     network (decided in Go), and nothing happened for a short margin:
//     no request in flight for netMargin (scriptMargin after a script
//     arrived that may still have to be compiled and run: a module
//     script, or a classic one that arrived after the document's load
//     event, which waits for every classic script that arrived before
//     it); no fetch or XHR whose
//     promise or events have not settled, nor a response body being read;
//     no pending short timer (setTimeout of at most timerMaxMS, up to
//     timerDepth nested), idle callback, animation frame (up to the same
//     depth: an animation loop does not count) or scheduler task; no
//     worker that has not answered; no font loading; no script or
//     stylesheet element still loading; no message the page posted to
//     itself (its window, a MessageChannel's other port) not delivered
//     yet; no animation or transition ending within timerMaxMS while the
//     page is shown; and for idleMargin no DOM change (shadow roots included), no
//     counted callback run, no message posted, no request settled. The
//     page's margin and the network's run at the same time (see settle).
//   - quiet: no request in flight for quietPeriod, as before the signals:
//     pages that poll, animate forever or hold a connection open end there
//     (or at the timeout). Only work the page's signals count as pending
//     (not loops: those are not counted) holds it, for up to quietHold.
//
// When short timers are all that is left, the hook does not wait for them:
// it runs the one due first at once (forward), with the page's clock
// (Date.now, performance.now, frame times) moved on by the time skipped,
// so that code comparing times sees its delay passed. The page reaches the
// state its timers lead to, a task per timer instead of their delays; a
// timer the page clears before its forwarded run does not run.
//
// The margins were measured with the trap pages of internal/traps on this
// project's 2-core machine, with and without two CPU hogs. Before messages
// were pending until delivered, work split in MessageChannel tasks
// (React's scheduler) was captured early under load with no margin, and
// from 10 ms every trap was captured complete (three runs of each). With
// them pending, every trap is complete with no page margin at all (five
// runs of each, with and without the hogs): idleMargin keeps the 10 ms
// that sufficed without that signal. With a network margin of 5 ms, a
// stylesheet added before the hook's first question (so not watched) was
// captured before its load handler ran: netMargin stays at 25 ms, which
// costs little, as it runs alongside the page's. scriptMargin guards a
// large module's compilation: with it at 0, import-big (half a megabyte of
// module imported while the document loads) was captured early in 2 of 5
// runs under the hogs, and with it at 50 ms never (five runs of every
// trap, with the hogs). A classic script needs it only when it arrived
// after the load and was not watched: one that arrived before the load
// (script-big, docsify's bundle) ran before the load event, and one a load
// handler adds (script-added-big) is watched from the load event on
// (before that, with the observer started at the first question, it was
// captured early in 4 of 5 runs with no script margin, and once in the
// e2e run at 50 ms). import-big was also captured early once in the full
// e2e suite at 50 ms, so the margin is put off by the script's size too
// (compileTime: 100 ms more for its half megabyte).
//
// The hook is the page's to break: a page that replaces or breaks it only
// changes when its own render ends, within quietPeriod and the render
// timeout. doneJS is bounded in time, and a page whose hook does not
// answer is waited for by the quiet rule alone.
const (
	idleMargin   = 10 * time.Millisecond  // silence asked of the page's signals (measured: see above)
	netMargin    = 25 * time.Millisecond  // no request in flight this long
	scriptMargin = 50 * time.Millisecond  // the same after a script arrived
	doneWait     = 150 * time.Millisecond // longest a doneJS call waits in the page
	doneTimeout  = time.Second            // a doneJS call that takes longer: the hook is not trusted
	quietHold    = time.Second            // the quiet rule waits this much longer for pending work
	settlePoll   = 5 * time.Millisecond   // how often settle looks at the network (no call to the page)
	timerMaxMS   = 500                    // longer timers are not waited for (the quiet rule would not)
	timerDepth   = 4                      // nested timers or frames beyond this are a loop

	idleCallbackMaxMS = 200  // an idle callback runs this late at the latest
	messageMaxMS      = 200  // a message posted to the page itself is waited for this long at most
	animationMaxMS    = 1000 // animations hold a document this long at most, in all
)

// doneKey is the page function doneHookJS defines.
const doneKey = "__prismDone"

// doneHookJS tracks what the page has going (see above) and defines
// doneKey(margin, wait): a promise that resolves "idle" once nothing is
// pending and nothing happened for margin ms, or after wait ms with what
// is still going ("busy:timer", ...). It captures every built-in it uses
// before the page runs, so a page that replaces them later does not
// change the hook (one that replaces the hooked APIs in place only
// replaces its own signals).
var doneHookJS = fmt.Sprintf(`(() => {
	const w = globalThis, key = %q, TMAX = %d, DEPTH = %d, IDLE = %d, MSGMAX = %d, ANIMMAX = %d;
	// Not in the reset's about:blank (nothing renders there), nor twice.
	if ((w === w.top && location.href === 'about:blank') || Object.getOwnPropertyDescriptor(w, key)) return;
	const R = Reflect, apply = R.apply, construct = R.construct, defProp = Object.defineProperty, getDesc = Object.getOwnPropertyDescriptor;
	const perf = w.performance, pnow = perf && perf.now, now = () => apply(pnow, perf, []);
	const oST = w.setTimeout, oCT = w.clearTimeout, P = w.Promise, pthen = P.prototype.then;
	const Mset = Map.prototype.set, Mdel = Map.prototype.delete, Mforeach = Map.prototype.forEach, Mhas = Map.prototype.has, Mget = Map.prototype.get, Msize = getDesc(Map.prototype, 'size').get;
	const Sadd = Set.prototype.add, Sdel = Set.prototype.delete, Ssize = getDesc(Set.prototype, 'size').get;
	const add = EventTarget.prototype.addEventListener, Asort = Array.prototype.sort, Aslice = Array.prototype.slice;
	let last = now(), depth = 0, fetches = 0;
	const stamp = () => { last = now(); };
	const timers = new Map(), moved = new Map(), rafs = new Map(), idles = new Map(), workers = new Set(), loading = new Set();
	const msize = (m) => apply(Msize, m, []), ssize = (m) => apply(Ssize, m, []);
	const wrap = (o, k, make) => {
		const d = o && getDesc(o, k);
		if (d && typeof d.value === 'function') defProp(o, k, { ...d, value: new Proxy(d.value, make(d.value)) });
	};
	// The page's clock (Date.now, performance.now, frame times): real time
	// plus the time forwarding skipped (see forward).
	let offset = 0;
	const vnow = () => now() + offset;
	const shifted = () => ({ apply(f, self, args) { return apply(f, self, args) + offset; } });
	wrap(Date, 'now', shifted);
	if (w.Performance) wrap(w.Performance.prototype, 'now', shifted);
	// Runs cb at nesting depth d; pending (null: not counted) drops it.
	const runner = (pending, cb, d, id, frame) => function (...a) {
		if (pending) { apply(Mdel, pending, [id.v]); stamp(); }
		if (frame && typeof a[0] === 'number') a[0] += offset;
		const prev = depth; depth = d;
		try { return apply(cb, this, a); } finally { depth = prev; if (pending) stamp(); }
	};
	// Every callback runs at its nesting depth (one more than where it was
	// scheduled); only those within DEPTH, and timers within TMAX, count.
	const scheduler = (pending, timer) => ({ apply(f, self, args) {
		const cb = args[0], ms = +args[1] || 0;
		if (typeof cb !== 'function') return apply(f, self, args);
		const counted = depth < DEPTH && !(timer && ms > TMAX);
		const id = { v: 0 };
		const run = runner(counted ? pending : null, cb, depth + 1, id, pending === rafs);
		args[0] = run;
		id.v = apply(f, self, args);
		if (counted) apply(Mset, pending, [id.v, { due: vnow() + Math.max(ms, 0), run, args }]);
		return id.v;
	} });
	// forward runs every counted timer now, in due order, each in a task
	// of its own, when nothing else is pending: the page reaches the state
	// its timers lead to without the wait (a 200 ms timer costs a task, not
	// 200 ms), and its clock moves on to each timer's due time as it runs,
	// so that code comparing times (a debounce) sees its delay passed.
	// Timers those callbacks set are forwarded at the next question.
	const forward = () => {
		const due = [];
		apply(Mforeach, timers, [(v, k) => { due[due.length] = [v.due, k, v]; }]);
		if (due.length === 0) return false;
		apply(Asort, due, [(a, b) => a[0] - b[0]]);
		for (let i = 0; i < due.length; i++) {
			const [at, id, v] = due[i];
			apply(oCT, w, [id]);
			apply(Mdel, timers, [id]);
			const rest = apply(Aslice, v.args, [2]);
			const shim = () => {
				offset = Math.max(offset, at - now());
				apply(v.run, w, rest);
			};
			apply(Mset, moved, [id, apply(oST, w, [shim, 0])]); // a clearTimeout of the page's id still cancels it
		}
		return true;
	};
	const canceller = (pending) => () => ({ apply(f, self, args) {
		apply(Mdel, pending, [args[0]]);
		if (pending === timers && apply(Mhas, moved, [args[0]])) apply(oCT, w, [apply(Mget, moved, [args[0]])]);
		return apply(f, self, args);
	} });
	wrap(w, 'setTimeout', () => scheduler(timers, true));
	wrap(w, 'clearTimeout', canceller(timers));
	wrap(w, 'requestAnimationFrame', () => scheduler(rafs, false));
	wrap(w, 'cancelAnimationFrame', canceller(rafs));
	// An idle callback runs within IDLE ms at the latest (the page's own
	// timeout when shorter): a busy or hidden renderer may give no idle
	// period for seconds, and the page would wait for it past the render.
	wrap(w, 'requestIdleCallback', () => {
		const s = scheduler(idles, false);
		return { apply(f, self, args) {
			const o = args[1];
			let t = IDLE;
			try { if (o && +o.timeout > 0) t = Math.min(+o.timeout, IDLE); } catch (e) {}
			return s.apply(f, self, [args[0], { timeout: t }]);
		} };
	});
	wrap(w, 'cancelIdleCallback', canceller(idles));
	// A promise the page waits on: pending until it settles.
	const track = (p) => {
		if (!(p instanceof P)) return p;
		fetches++;
		const done = () => { fetches--; stamp(); };
		apply(pthen, p, [done, done]);
		return p;
	};
	const tracker = () => ({ apply(f, self, args) { return track(apply(f, self, args)); } });
	wrap(w, 'fetch', tracker);
	if (w.Response) for (const k of ['json', 'text', 'arrayBuffer', 'blob', 'formData', 'bytes']) wrap(w.Response.prototype, k, tracker);
	if (w.Scheduler) wrap(w.Scheduler.prototype, 'postTask', tracker);
	if (w.XMLHttpRequest) wrap(w.XMLHttpRequest.prototype, 'send', () => ({ apply(f, self, args) {
		fetches++;
		let open = true;
		const done = () => { if (open) { open = false; fetches--; stamp(); } };
		apply(add, self, ['loadend', done]); // before send: a synchronous request ends inside it
		try { return apply(f, self, args); } catch (e) { done(); throw e; }
	} }));
	// A worker is waited for from its start, and after each message sent
	// to it, until it answers (or fails, or is terminated).
	if (w.Worker) {
		const answered = (wk) => () => { apply(Sdel, workers, [wk]); stamp(); };
		const Wp = w.Worker.prototype;
		w.Worker = new Proxy(w.Worker, { construct(t, args, nt) {
			const wk = construct(t, args, nt);
			apply(Sadd, workers, [wk]);
			for (const e of ['message', 'messageerror', 'error']) apply(add, wk, [e, answered(wk)]);
			return wk;
		} });
		wrap(Wp, 'postMessage', () => ({ apply(f, self, args) { apply(Sadd, workers, [self]); stamp(); const r = apply(f, self, args); transferred(args[1]); return r; } }));
		wrap(Wp, 'terminate', () => ({ apply(f, self, args) { apply(Sdel, workers, [self]); return apply(f, self, args); } }));
	}
	// A message the page posts to itself (to its own window, or to the
	// other port of a MessageChannel it made: how React's scheduler and
	// setImmediate shims split work into tasks) is pending until it is
	// delivered, for up to MSGMAX ms (one that is never delivered, to a
	// port that never starts, does not hold the page longer). A window
	// counts the posts made with its postMessage (a same-origin frame's
	// post to its parent is one too) and every message delivered to it; a
	// channel counts a port's posts, and their delivery, while neither
	// port was sent away in a transfer list (messages then come from or go
	// to another context). Other messages only count as activity.
	let msgs = 0, msgAt = 0;
	const own = () => { msgs++; msgAt = now(); };
	const delivered = () => { if (msgs > 0) msgs--; stamp(); };
	const WMget = WeakMap.prototype.get, WMset = WeakMap.prototype.set, WShas = WeakSet.prototype.has, WSadd = WeakSet.prototype.add;
	const isArray = Array.isArray, partner = new WeakMap(), gone = new WeakSet();
	const local = (port) => port !== undefined && !apply(WShas, gone, [port]);
	const channel = (port) => { const q = apply(WMget, partner, [port]); return q !== undefined && local(q) && local(port); };
	// The ports of a transfer list (an array, or an options object's).
	const transferred = (t) => {
		try {
			const list = t && (apply(isArray, Array, [t]) ? t : t.transfer);
			if (list) for (let i = 0; i < list.length && i < 100; i++) if (apply(WMget, partner, [list[i]]) !== undefined) apply(WSadd, gone, [list[i]]);
		} catch (e) {}
	};
	const MC = w.MessageChannel, mcPort1 = MC && getDesc(MC.prototype, 'port1'), mcPort2 = MC && getDesc(MC.prototype, 'port2');
	if (MC && mcPort1 && mcPort2) {
		w.MessageChannel = new Proxy(MC, { construct(t, args, nt) {
			const ch = construct(t, args, nt);
			try {
				const p1 = apply(mcPort1.get, ch, []), p2 = apply(mcPort2.get, ch, []);
				apply(WMset, partner, [p1, p2]);
				apply(WMset, partner, [p2, p1]);
				for (const port of [p1, p2]) { // does not start the port: the page's onmessage or start() does
					apply(add, port, ['message', () => { if (channel(port)) delivered(); else stamp(); }]);
				}
			} catch (e) {}
			return ch;
		} });
	}
	apply(add, w, ['message', delivered, true]);
	wrap(w, 'postMessage', () => ({ apply(f, self, args) {
		const r = apply(f, self, args); // one that throws is not posted
		transferred(args.length > 2 ? args[2] : args[1]);
		if (self === w || self == null) own();
		stamp();
		return r;
	} }));
	if (w.MessagePort) wrap(w.MessagePort.prototype, 'postMessage', () => ({ apply(f, self, args) {
		const r = apply(f, self, args);
		transferred(args[1]);
		if (channel(self)) own();
		stamp();
		return r;
	} }));
	// Animations and transitions about to end (within TMAX ms) while the
	// page is shown (a hidden page's do not run): their end events often
	// write content. Endless ones, and long ones, are not waited for.
	const getAnims = Document.prototype.getAnimations, visState = getDesc(Document.prototype, 'visibilityState');
	const AP = w.Animation && w.Animation.prototype, animState = AP && getDesc(AP, 'playState'), animEffect = AP && getDesc(AP, 'effect'), animTime = AP && getDesc(AP, 'currentTime'), animRate = AP && getDesc(AP, 'playbackRate');
	let animFirst = 0; // when an animation first held the page: animations hold it ANIMMAX ms at most in all (one may start the next)
	const timing = w.AnimationEffect && w.AnimationEffect.prototype.getComputedTiming;
	const animating = () => {
		try {
			if (!getAnims || !timing || apply(visState.get, document, []) !== 'visible') return false;
			const all = apply(getAnims, document, []);
			for (let i = 0; i < all.length && i < 200; i++) {
				const a = all[i];
				if (apply(animState.get, a, []) !== 'running') continue;
				const eff = apply(animEffect.get, a, []), cur = apply(animTime.get, a, []);
				if (!eff || typeof cur !== 'number') continue;
				const end = apply(timing, eff, []).endTime, rate = apply(animRate.get, a, []);
				if (!rate || !(end < Infinity)) continue;
				if ((rate > 0 ? end - cur : cur) / (rate > 0 ? rate : -rate) > TMAX) continue;
				if (!animFirst) animFirst = now();
				return now() - animFirst <= ANIMMAX;
			}
		} catch (e) {}
		return false;
	};
	for (const e of ['transitionend', 'transitioncancel', 'animationend', 'animationcancel']) apply(add, w, [e, stamp, true]);
	// Fonts.
	const docFonts = getDesc(Document.prototype, 'fonts'), fstatus = w.FontFaceSet && getDesc(w.FontFaceSet.prototype, 'status');
	const fonts = () => { try { return apply(fstatus.get, apply(docFonts.get, document, []), []) === 'loading'; } catch (e) { return false; } };
	try { const fs = apply(docFonts.get, document, []); for (const e of ['loading', 'loadingdone', 'loadingerror']) apply(add, fs, [e, stamp]); } catch (e) {}
	// DOM changes, in the document and in every shadow root; script and
	// stylesheet elements added with a URL load until their load or error.
	const MO = w.MutationObserver, observe = MO.prototype.observe;
	const elLocal = getDesc(Element.prototype, 'localName').get, getAttr = Element.prototype.getAttribute;
	const jsType = /^(|module|(text|application)\/(x-)?(java|ecma)script)$/;
	const watchLoad = (n) => {
		const ln = apply(elLocal, n, []);
		let loads = false;
		if (ln === 'script') {
			const type = String(apply(getAttr, n, ['type']) || '').trim().toLowerCase();
			loads = !!apply(getAttr, n, ['src']) && jsType.test(type) && apply(getAttr, n, ['nomodule']) === null;
		} else if (ln === 'link') {
			const rel = String(apply(getAttr, n, ['rel']) || '').toLowerCase().split(/\s+/);
			loads = rel.includes('stylesheet') && !rel.includes('alternate') && !!apply(getAttr, n, ['href']);
		}
		if (!loads) return;
		apply(Sadd, loading, [n]);
		const done = () => { apply(Sdel, loading, [n]); stamp(); };
		apply(add, n, ['load', done]); apply(add, n, ['error', done]);
	};
	// Changes to style attributes alone (what script-driven animations
	// make) are not content: they do not hold the page up.
	const mo = new MO((records) => {
		try {
			for (const r of records) {
				if (r.type !== 'attributes' || r.attributeName !== 'style') { stamp(); break; }
			}
			if (ssize(loading) > 1000) return;
			for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) watchLoad(n);
		} catch (e) {}
	});
	const opts = { subtree: true, childList: true, attributes: true, characterData: true };
	// The observer starts at the load event, before the page's own load
	// handlers (a capturing listener of the hook's, the first one), or with
	// the first question if that comes earlier: Blink walks a changed
	// node's ancestors for subtree observers, so observing from the start
	// would make a page that builds a very deep tree while it loads
	// quadratic (it hangs instead of failing), and what changes before the
	// load is waited for by the load itself. A script or stylesheet a load
	// handler adds is watched until it ran (script-added-big).
	let active = false;
	const roots = [];
	const watch = (n) => { try { apply(observe, mo, [n, opts]); } catch (e) {} };
	const activate = () => {
		if (active) return;
		active = true;
		stamp();
		watch(document);
		for (let i = 0; i < roots.length; i++) watch(roots[i]);
		roots.length = 0;
	};
	try { apply(add, w, ['load', () => { try { activate(); } catch (e) {} }, true]); } catch (e) {}
	wrap(Element.prototype, 'attachShadow', () => ({ apply(f, self, args) {
		const sr = apply(f, self, args);
		if (active) watch(sr); else if (roots.length < 100000) roots[roots.length] = sr;
		return sr;
	} }));
	// What is pending, timers last: 'timer' means nothing else is.
	const busy = () => {
		if (fetches > 0) return 'fetch';
		if (msize(rafs) > 0) return 'frame';
		if (msize(idles) > 0) return 'idle-callback';
		if (ssize(workers) > 0) return 'worker';
		if (ssize(loading) > 0) return 'loading';
		if (fonts()) return 'font';
		if (animating()) return 'animation';
		if (msgs > 0) {
			if (now() - msgAt < MSGMAX) return 'message';
			msgs = 0;
		}
		if (msize(timers) > 0) return 'timer';
		return '';
	};
	// PRISM's own waits in the page (loadedJS, readyJS) use the timer the
	// page had, not one it replaced.
	defProp(w, key + 'Timer', { value: (f, ms) => apply(oST, w, [f, ms]), enumerable: false, configurable: false, writable: false });
	defProp(w, key, { value: (margin, wait) => new P((resolve) => {
		activate();
		const end = now() + wait;
		const check = () => {
			const b = busy(), t = now();
			if (!b && t - last >= margin) return resolve('idle');
			if (b === 'timer' && t - last >= margin && t < end && forward()) return apply(oST, w, [check, 0]);
			if (t >= end) return resolve('busy:' + (b || 'recent'));
			const next = b ? 10 : margin - (t - last);
			apply(oST, w, [check, Math.max(1, Math.min(next, end - t))]);
		};
		check();
	}), enumerable: false, configurable: false, writable: false });
})()`, doneKey, timerMaxMS, timerDepth, idleCallbackMaxMS, messageMaxMS, animationMaxMS)

// doneJS asks the page's hook whether it is idle; "none" when the document
// has no hook (it did not run, or the page got there first).
var doneJS = fmt.Sprintf(`(() => { const d = globalThis[%q]; return typeof d === 'function' ? d(%d, %d) : 'none'; })()`,
	doneKey, idleMargin.Milliseconds(), doneWait.Milliseconds())

// settle waits until the page is done by the idle rule (EndedIdle) or the
// quiet rule (EndedQuiet), or ctx ends. The page is asked as soon as no
// request is in flight, so that its margin (idleMargin, in the page) and
// the network's (netMargin, scriptMargin, in Go) run at the same time: its
// "idle" ends the render once the network's margin is over too, with no
// request started or finished meanwhile (if the network's margin is not
// over yet, the page is asked again when it is). While the page's last
// answer was finite work still pending (a request, a counted timer or
// frame, a worker, a font: not a loop, which is never counted), the quiet
// rule holds for up to quietHold more: a slow machine's late frame or
// timer is waited for, a page that never settles is not.
func (t *tab) settle(ctx context.Context, st *renderState) (string, error) {
	r := t.inst.r
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	signals, pending := true, false
	idleAt, idle := uint64(0), false // the page said idle at network activity idleAt
	for {
		now := r.opts.Now()
		if st.quiet(now, quietPeriod) && (!pending || st.quiet(now, quietPeriod+quietHold)) {
			return EndedQuiet, nil
		}
		seq := st.activity()
		if signals && st.settled(now, 0, 0) && (!idle || seq != idleAt || st.settled(now, netMargin, scriptMargin)) {
			res, err := t.askDone(ctx)
			idle = false
			switch {
			case ctx.Err() != nil:
				return "", ctx.Err()
			case err != nil || res == "none":
				// No hook in this document (or it did not answer in time):
				// the quiet rule alone.
				signals, pending = false, false
			case res == "idle" && st.activity() == seq:
				if st.settled(r.opts.Now(), netMargin, scriptMargin) {
					return EndedIdle, nil
				}
				idle, idleAt = true, seq
			default:
				pending = strings.HasPrefix(res, "busy:") && res != "busy:recent"
			}
			continue // the call waited already
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// askDone evaluates doneJS, bounded by doneTimeout.
func (t *tab) askDone(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, doneTimeout)
	defer cancel()
	return t.evalString(ctx, doneJS)
}

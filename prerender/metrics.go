package prerender

import (
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/internal/metricdoc"
)

// outcome is how a render ended; its String is the outcome label of
// prism_render_total.
type outcome int

const (
	outcomeOK outcome = iota
	outcomePartial
	outcomeRedirect
	outcomeErrorStatus
	outcomeBlank
	outcomeError
	outcomeTimeout
	outcomeUnavailable
	outcomeNoCapacity
	outcomeBadRequest
	outcomeCrashed
	outcomeOverLimit
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "partial", "redirect", "error_status", "blank", "error",
	"timeout", "unavailable", "no_capacity", "bad_request", "crashed", "over_limit"}

func (o outcome) String() string {
	if o < 0 || o >= numOutcomes {
		return "unknown"
	}
	return outcomeNames[o]
}

// rendererMetrics holds the Renderer's metrics; a nil *rendererMetrics
// records nothing.
type rendererMetrics struct {
	total    [numOutcomes]*metrics.Counter
	duration *metrics.PrometheusHistogram
	crashes  *metrics.Counter
	restarts *metrics.Counter
	shown    *metrics.Counter
	ended    map[string]*metrics.Counter // by Result.Ended
	settle   *metrics.PrometheusHistogram
	// What hostile pages were stopped from doing.
	pageCrashes *metrics.Counter
	dialogs     *metrics.Counter
	popups      *metrics.Counter
	refused     map[string]*metrics.Counter // by fetchLimitReasons
	// Requests that named validators, by the origin's answer.
	kept, changed *metrics.Counter
}

// fetchLimitReasons label prism_render_fetch_refused_total.
var fetchLimitReasons = []string{"body_too_large", "page_bytes", "inflight_bytes"}

// renderBuckets are prism_render_duration_seconds's bucket bounds: 50 ms
// (a page that needs no script) to 30 s (render.timeout's upper range).
var renderBuckets = []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30}

func newRendererMetrics(s *metricdoc.Set, r *Renderer) *rendererMetrics {
	if s == nil {
		return nil
	}
	m := &rendererMetrics{ended: map[string]*metrics.Counter{}}
	for o := range numOutcomes {
		m.total[o] = s.Counter(`prism_render_total{outcome="`+o.String()+`"}`,
			"Renders finished, by outcome (ok, partial, redirect, error_status, blank, error, timeout, ...).")
	}
	m.duration = s.Histogram(`prism_render_duration_seconds`,
		"Time a render took, from its request (any wait for a tab included) to its result, in seconds.", renderBuckets)
	for _, e := range []string{EndedReady, EndedIdle, EndedQuiet, EndedTimeout} {
		m.ended[e] = s.Counter(`prism_render_ended_total{reason="`+e+`"}`,
			"Renders by why they stopped waiting for the page: ready (prerenderReady), idle (nothing the page started still going: requests, timers, frames, workers, fonts, DOM changes), quiet (network quiet period), timeout.")
	}
	m.settle = s.Histogram(`prism_render_settle_seconds`,
		"Time from navigation until a render stopped waiting for its page (ready, quiet or timeout), in seconds.", renderBuckets)
	m.crashes = s.Counter(`prism_browser_crashes_total`, "Browser crashes and hangs detected (the browser was killed and relaunched).")
	m.restarts = s.Counter(`prism_browser_restarts_total`, "Browser launches after the first: relaunches after a crash and planned recycles.")
	m.shown = s.Counter(`prism_render_shown_total`, "Renders whose page had to be shown (laid out and painted) instead of rendered hidden.")
	m.pageCrashes = s.Counter(`prism_render_page_crashes_total`, "Renders whose page crashed its renderer process.")
	m.dialogs = s.Counter(`prism_render_dialogs_dismissed_total`, "JavaScript dialogs (alert, confirm, prompt, beforeunload) a page opened and the render dismissed.")
	m.popups = s.Counter(`prism_render_popups_closed_total`, "Windows a page opened and the render closed.")
	m.refused = map[string]*metrics.Counter{}
	for _, r := range fetchLimitReasons {
		m.refused[r] = s.Counter(`prism_render_fetch_refused_total{reason="`+r+`"}`,
			"Subresource fetches of a page refused by a size limit, by reason.")
	}
	const revalidatedHelp = "Requests of a page that named validators (If-None-Match, If-Modified-Since), as the browser does for a copy it kept from an earlier render, by the origin's answer: kept (304, the copy is used) or changed (anything else)."
	m.kept = s.Counter(`prism_render_revalidated_total{result="kept"}`, revalidatedHelp)
	m.changed = s.Counter(`prism_render_revalidated_total{result="changed"}`, revalidatedHelp)
	s.Gauge(`prism_render_active`, "Renders in progress in the browser.",
		func() float64 { return float64(r.active.Load()) })
	s.Gauge(`prism_render_waiting`, "Renders waiting for a free tab.",
		func() float64 { return float64(r.waiting.Load()) })
	s.Gauge(`prism_render_pool_tabs`, "Tabs in the render pool (render.tabs).",
		func() float64 { return float64(r.opts.Tabs) })
	s.Gauge(`prism_render_pool_free`, "Tabs of the render pool free for a render.",
		func() float64 { return float64(r.Capacity().Free) })
	s.Gauge(`prism_browser_up`, "1 while the browser is up and answering, else 0.", func() float64 {
		if r.Healthy() == nil {
			return 1
		}
		return 0
	})
	return m
}

// observe records a finished render and, when it produced one, its
// result: shown, why it stopped waiting, how long its page took to settle.
func (m *rendererMetrics) observe(o outcome, d time.Duration, res *Result) {
	if m == nil {
		return
	}
	if res != nil && res.Shown {
		m.shown.Inc()
	}
	if res != nil && m.ended[res.Ended] != nil {
		m.ended[res.Ended].Inc()
		m.settle.Update(res.Settle.Seconds())
	}
	if o >= 0 && o < numOutcomes {
		m.total[o].Inc()
	}
	m.duration.Update(d.Seconds())
}

func (m *rendererMetrics) crash() {
	if m != nil {
		m.crashes.Inc()
	}
}

func (m *rendererMetrics) restart() {
	if m != nil {
		m.restarts.Inc()
	}
}

func (m *rendererMetrics) pageCrash() {
	if m != nil {
		m.pageCrashes.Inc()
	}
}

func (m *rendererMetrics) dialog() {
	if m != nil {
		m.dialogs.Inc()
	}
}

func (m *rendererMetrics) popupClosed() {
	if m != nil {
		m.popups.Inc()
	}
}

// revalidated records the origin's answer to a request that named
// validators.
func (m *rendererMetrics) revalidated(status int) {
	if m == nil {
		return
	}
	if status == http.StatusNotModified {
		m.kept.Inc()
	} else {
		m.changed.Inc()
	}
}

func (m *rendererMetrics) fetchRefused(reason string) {
	if m != nil {
		if c := m.refused[reason]; c != nil {
			c.Inc()
		}
	}
}

package prerender

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// outcomes are the label values of prism_render_total.
var outcomes = []string{"ok", "partial", "redirect", "error_status", "blank", "error",
	"timeout", "unavailable", "no_capacity", "bad_request", "crashed", "over_limit"}

// rendererMetrics holds the Renderer's metrics; a nil *rendererMetrics
// records nothing.
type rendererMetrics struct {
	total    map[string]*metrics.Counter
	duration *metrics.Histogram
	crashes  *metrics.Counter
	restarts *metrics.Counter
	shown    *metrics.Counter
	// What hostile pages were stopped from doing.
	pageCrashes *metrics.Counter
	dialogs     *metrics.Counter
	popups      *metrics.Counter
	refused     map[string]*metrics.Counter // by fetchLimitReasons
}

// fetchLimitReasons label prism_render_fetch_refused_total.
var fetchLimitReasons = []string{"body_too_large", "page_bytes", "inflight_bytes"}

func newRendererMetrics(s *metrics.Set, r *Renderer) *rendererMetrics {
	if s == nil {
		return nil
	}
	m := &rendererMetrics{total: map[string]*metrics.Counter{}}
	for _, o := range outcomes {
		m.total[o] = s.GetOrCreateCounter(`prism_render_total{outcome="` + o + `"}`)
	}
	m.duration = s.GetOrCreateHistogram(`prism_render_duration_seconds`)
	m.crashes = s.GetOrCreateCounter(`prism_browser_crashes_total`)
	m.restarts = s.GetOrCreateCounter(`prism_browser_restarts_total`)
	m.shown = s.GetOrCreateCounter(`prism_render_shown_total`)
	m.pageCrashes = s.GetOrCreateCounter(`prism_render_page_crashes_total`)
	m.dialogs = s.GetOrCreateCounter(`prism_render_dialogs_dismissed_total`)
	m.popups = s.GetOrCreateCounter(`prism_render_popups_closed_total`)
	m.refused = map[string]*metrics.Counter{}
	for _, r := range fetchLimitReasons {
		m.refused[r] = s.GetOrCreateCounter(`prism_render_fetch_refused_total{reason="` + r + `"}`)
	}
	s.GetOrCreateGauge(`prism_render_active`, func() float64 { return float64(r.active.Load()) })
	s.GetOrCreateGauge(`prism_render_waiting`, func() float64 { return float64(r.waiting.Load()) })
	s.GetOrCreateGauge(`prism_render_pool_tabs`, func() float64 { return float64(r.opts.Tabs) })
	s.GetOrCreateGauge(`prism_render_pool_free`, func() float64 { return float64(r.Capacity().Free) })
	s.GetOrCreateGauge(`prism_browser_up`, func() float64 {
		if r.Healthy() == nil {
			return 1
		}
		return 0
	})
	return m
}

// observe records a finished render; shown: its page had to be shown
// (painted) rather than rendered hidden.
func (m *rendererMetrics) observe(outcome string, d time.Duration, shown bool) {
	if m == nil {
		return
	}
	if shown {
		m.shown.Inc()
	}
	if c := m.total[outcome]; c != nil {
		c.Inc()
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

func (m *rendererMetrics) fetchRefused(reason string) {
	if m != nil {
		if c := m.refused[reason]; c != nil {
			c.Inc()
		}
	}
}

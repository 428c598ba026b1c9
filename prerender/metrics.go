package prerender

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
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
	m := &rendererMetrics{}
	for o := range numOutcomes {
		m.total[o] = s.GetOrCreateCounter(`prism_render_total{outcome="` + o.String() + `"}`)
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
func (m *rendererMetrics) observe(o outcome, d time.Duration, shown bool) {
	if m == nil {
		return
	}
	if shown {
		m.shown.Inc()
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

func (m *rendererMetrics) fetchRefused(reason string) {
	if m != nil {
		if c := m.refused[reason]; c != nil {
			c.Inc()
		}
	}
}

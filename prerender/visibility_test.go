package prerender

import (
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/metricdoc"
)

// Pages render hidden unless they use an API that needs frames; those are
// shown, and what their frames produce is in the capture.
func TestVisibilityOnDemand(t *testing.T) {
	e := getEnv(t)
	cases := []struct {
		path, want string
		shown      bool
	}{
		{"/vis-plain", "plain native=true name=requestAnimationFrame", false},
		{"/vis-raf", "from a frame", true},
		{"/vis-io", "intersecting", true},
		{"/vis-state", "seen visible", true},
		{"/vis-animate", "animation finished", true},
		{"/vis-transition", "transition ended", true},
		{"/vis-plain", "plain native=true", false}, // hidden again after a shown render on the same tab
	}
	for _, c := range cases {
		res := mustRender(t, e, Request{URL: c.path})
		if !strings.Contains(string(res.HTML), c.want) {
			t.Errorf("%s: capture lacks %q:\n%s", c.path, c.want, res.HTML)
		}
		if res.Shown != c.shown {
			t.Errorf("%s: Shown = %v, want %v", c.path, res.Shown, c.shown)
		}
	}
}

// A page with a lazy iframe is shown before the capture so the frame loads.
func TestVisibilityLazyFrame(t *testing.T) {
	e := getEnv(t)
	before := e.count("/vis-lazy-frame")
	res := mustRender(t, e, Request{URL: "/vis-lazy"})
	if !res.Shown {
		t.Error("page with a lazy iframe was not shown")
	}
	if e.count("/vis-lazy-frame") == before {
		t.Error("lazy iframe never loaded")
	}
}

// AlwaysVisible shows every page.
func TestVisibilityAlways(t *testing.T) {
	e := getEnv(t)
	set := metricdoc.NewSet()
	r, ctx, stop := runRenderer(t, Options{ChromePath: chromeBin, Tabs: 1, Timeout: 3 * time.Second, AlwaysVisible: true,
		UserDataDir: t.TempDir(), Origin: e.r.opts.Origin, Metrics: set})
	for _, p := range []string{"/vis-plain", "/vis-state"} {
		res, err := r.Render(ctx, Request{URL: "https://" + pubHost + p})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Shown {
			t.Errorf("%s: not shown with AlwaysVisible", p)
		}
	}
	if got := set.GetOrCreateCounter(`prism_render_shown_total`).Get(); got != 2 {
		t.Errorf("prism_render_shown_total = %d, want 2", got)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

// A hidden page's chained timers run at full speed: 40 chained 5 ms
// timeouts finish well within the render timeout (background throttling
// would stretch them to 1 s each).
func TestHiddenTimersNotThrottled(t *testing.T) {
	e := getEnv(t)
	res := mustRender(t, e, Request{URL: "/chain"})
	if res.Partial || res.Shown || !strings.Contains(string(res.HTML), "chained=40") {
		t.Errorf("partial %v shown %v: %s", res.Partial, res.Shown, res.HTML)
	}
}

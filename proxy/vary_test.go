package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prismproxy/prism/prerender"
)

func TestPassThroughVaryOnUserAgent(t *testing.T) {
	h := newHarness(t)
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return nil, errors.New("browser down")
	})
	tests := []struct {
		name, method, path, ua string
		headers                []reqOpt
		want                   bool
	}{
		{"person page", http.MethodGet, "/page", uaPerson, nil, true},
		{"person HEAD", http.MethodHead, "/page", uaPerson, nil, true},
		{"bot fallback to origin", http.MethodGet, "/fallback", uaGooglebot, nil, true},
		{"static asset", http.MethodGet, "/app.css", uaPerson, nil, false},
		{"POST", http.MethodPost, "/form", uaPerson, nil, false},
		{"browser's own request", http.MethodGet, "/page", uaPerson, []reqOpt{withHeader("X-Prism-Render", "1")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do(tc.method, tc.path, tc.ua, tc.headers...)
			got := strings.Contains(strings.Join(w.Header().Values("Vary"), ","), "User-Agent")
			if got != tc.want {
				t.Errorf("Vary = %q, want User-Agent in it: %v", w.Header().Values("Vary"), tc.want)
			}
		})
	}
}

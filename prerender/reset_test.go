package prerender

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/metricdoc"
)

// syncBuffer is a log sink safe for the renderer's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestErrorPagesResetCleanly: an error page (a status the render returns
// without waiting for its document: 5xx, and 4xx with an empty body) leaves
// a tab that resets without a warning, and the same tab renders the next
// page.
func TestErrorPagesResetCleanly(t *testing.T) {
	needChrome(t)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		switch r.URL.Path {
		case "/500":
			w.WriteHeader(500)
			w.Write([]byte(`<html><body>oops<script>setInterval(() => {}, 10)</script></body></html>`))
		case "/500-plain":
			http.Error(w, "internal error", 500)
		case "/500-js":
			w.WriteHeader(500)
			w.Write([]byte(`<!DOCTYPE html><html><head><script src="/app.js"></script><link rel="stylesheet" href="/s.css"></head>
<body><div id="app">Loading</div><iframe src="/frame"></iframe><script>
document.getElementById('app').innerHTML = '<h1>err</h1>'; sessionStorage.setItem('x', '1'); localStorage.setItem('y', '2');
document.cookie = 'c=1';</script></body></html>`))
		case "/500-hang":
			w.WriteHeader(500)
			w.Write([]byte(`<!DOCTYPE html><html><head><script>window.onbeforeunload = e => { e.preventDefault(); return 'stay'; };
window.onunload = () => { const t = Date.now(); while (Date.now() - t < 3000) {} };</script>
<script src="/hang.js"></script></head><body><img src="/hang.png"><iframe src="/hang"></iframe>oops</body></html>`))
		case "/hang.js", "/hang.png", "/hang":
			<-r.Context().Done()
		case "/app.js":
			w.Header().Set("Content-Type", "text/javascript")
			w.Write([]byte(`window.x = 1;`))
		case "/502":
			w.WriteHeader(502)
			w.Write([]byte(`<html><body>bad gateway</body></html>`))
		case "/503-empty":
			w.WriteHeader(503)
		case "/504-slow":
			w.WriteHeader(504)
			w.(http.Flusher).Flush()
			select { // a body still arriving at the reset
			case <-time.After(300 * time.Millisecond):
			case <-r.Context().Done():
			}
			w.Write([]byte(`<html><body>timeout</body></html>`))
		case "/500-big":
			w.WriteHeader(500)
			w.Write([]byte(`<html><body>`))
			for range 2000 {
				w.Write([]byte(strings.Repeat("<p>error detail</p>", 60)))
			}
		case "/500-trickle":
			w.WriteHeader(500)
			for i := range 4 {
				fmt.Fprintf(w, "<p>part %d</p>", i)
				w.(http.Flusher).Flush()
				select {
				case <-time.After(20 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		case "/404-empty":
			w.WriteHeader(404)
		default:
			w.Write([]byte(`<!DOCTYPE html><html><body><p>fine</p></body></html>`))
		}
	}))
	defer origin.Close()
	ou, _ := url.Parse(origin.URL)
	for _, visible := range []bool{false, true} {
		t.Run(fmt.Sprintf("always_visible=%v", visible), func(t *testing.T) { errorPagesResetCleanly(t, ou, visible) })
	}
}

func errorPagesResetCleanly(t *testing.T, ou *url.URL, visible bool) {
	var logs syncBuffer
	r, _, _ := runRenderer(t, Options{
		ChromePath: chromeBin, Tabs: 1, Timeout: 5 * time.Second, AlwaysVisible: visible,
		Origin:  func(h string) (*url.URL, bool) { return ou, h == pubHost },
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: metricdoc.NewSet(),
	})
	e := &testEnv{r: r}
	for _, path := range []string{"/500-hang", "/ok", "/500-hang", "/500-hang", "/500", "/ok", "/500-plain", "/500-js", "/ok", "/500-js", "/502", "/503-empty", "/504-slow", "/404-empty", "/500", "/500", "/500-big", "/ok", "/500-trickle", "/500-big", "/500-trickle", "/ok"} {
		res, err := render(t, e, Request{URL: path})
		if err != nil {
			t.Fatalf("Render(%s): %v", path, err)
		}
		if path == "/ok" && !strings.Contains(string(res.HTML), "fine") {
			t.Errorf("Render(/ok) after an error page: %s", res.HTML)
		}
	}
	for i := range 4 {
		host := pubHost
		for _, path := range []string{"/500-js", "/500", "/503-empty", "/500-big", "/500-trickle"} {
			if _, err := render(t, e, Request{URL: "https://" + host + path, Mobile: i%4 == 0, Width: 400, Height: 800}); err != nil {
				t.Fatalf("Render(%s%s): %v", host, path, err)
			}
		}
	}
	// With one tab, the last render began after the previous reset ended;
	// wait for the last one's reset the same way.
	if _, err := render(t, e, Request{URL: "/ok"}); err != nil {
		t.Fatal(err)
	}
	if s := logs.String(); strings.Contains(s, "tab reset failed") {
		t.Errorf("a tab reset failed after an error page:\n%s", s)
	}
}

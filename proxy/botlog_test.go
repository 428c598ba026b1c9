package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/prerender"
)

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// botLines returns the "proxy: bot" records logged so far, decoded.
func (b *logBuffer) botLines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "proxy: bot" {
			out = append(out, m)
		}
	}
	return out
}

func (b *logBuffer) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func withLogBuffer(b *logBuffer) harnessOpt {
	return func(o *testOptions) {
		o.Logger = slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// oneBotLine returns the only bot line logged since the last reset.
func oneBotLine(t *testing.T, b *logBuffer) map[string]any {
	t.Helper()
	lines := b.botLines(t)
	if len(lines) != 1 {
		t.Fatalf("%d bot lines, want 1: %v", len(lines), lines)
	}
	b.reset()
	return lines[0]
}

func TestBotLogLine(t *testing.T) {
	const ua = uaGooglebot
	slowFail := func(ctx context.Context, _ prerender.Request) (*prerender.Result, error) {
		return nil, prerender.ErrUnavailable
	}
	tests := []struct {
		name      string
		render    func(context.Context, prerender.Request) (*prerender.Result, error)
		prime     bool          // request once first (the line checked is the second's)
		advance   time.Duration // clock advance between prime and the checked request
		path      string
		level     string
		cache     string
		status    float64
		rendered  bool
		wantError bool
	}{
		{name: "miss", path: "/a", level: "INFO", cache: "MISS", status: 200, rendered: true},
		{name: "hit", prime: true, path: "/a", level: "DEBUG", cache: "HIT", status: 200},
		{name: "stale hit", prime: true, advance: 90 * time.Minute, render: slowFail, path: "/a", level: "INFO", cache: "STALE", status: 200},
		{name: "fallback to origin (browser down)", render: slowFail, path: "/missing", level: "WARN", cache: "BYPASS", status: 404, rendered: true, wantError: true},
		{name: "fallback to origin (timeout)", render: func(context.Context, prerender.Request) (*prerender.Result, error) {
			return nil, context.DeadlineExceeded
		}, path: "/p", level: "WARN", cache: "BYPASS", status: 200, rendered: true, wantError: true},
		{name: "fallback to origin (5xx page)", render: htmlResult(503, "<html>down</html>"), path: "/p", level: "WARN", cache: "BYPASS", status: 200, rendered: true, wantError: true},
		{name: "overload", path: "/p", level: "WARN", cache: "BYPASS", status: 200, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			h := newHarness(t, withLogBuffer(&logs))
			if tt.prime {
				h.do("GET", tt.path, ua)
				h.clock.advance(tt.advance)
				logs.reset()
			}
			if tt.name == "overload" {
				h.p.opts.MaxRenders = -1 // every miss is beyond it
			}
			if tt.render != nil {
				h.render.set(tt.render)
			}
			h.do("GET", tt.path, ua)
			l := oneBotLine(t, &logs)
			if l["level"] != tt.level || l["cache"] != tt.cache || l["status"] != tt.status {
				t.Errorf("level %v cache %v status %v, want %s %s %v", l["level"], l["cache"], l["status"], tt.level, tt.cache, tt.status)
			}
			if l["client"] != "192.0.2.1" || l["ua"] != ua {
				t.Errorf("client %v ua %v, want 192.0.2.1 and the crawler's UA", l["client"], l["ua"])
			}
			if l["host"] != "example.com" || l["dimension"] != "desktop" || l["path"] != tt.path {
				t.Errorf("host %v dimension %v path %v", l["host"], l["dimension"], l["path"])
			}
			if _, ok := l["total_ms"]; !ok {
				t.Error("no total_ms")
			}
			if _, ok := l["render_ms"]; ok != tt.rendered {
				t.Errorf("render_ms present %v, want %v", ok, tt.rendered)
			}
			if _, ok := l["err"]; ok != tt.wantError {
				t.Errorf("err present %v (%v), want %v", ok, l["err"], tt.wantError)
			}
		})
	}
}

// TestBotLogTimes: render_ms is the render alone, total_ms what the crawler
// waited, the fallback's origin fetch included.
func TestBotLogTimes(t *testing.T) {
	var logs logBuffer
	h := newHarness(t, withLogBuffer(&logs), func(o *testOptions) { o.FallbackTimeout = 300 * time.Millisecond })
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return nil, prerender.ErrUnavailable
	})
	w := h.do("GET", "/slow", uaGooglebot)
	if w.Code != 504 {
		t.Fatalf("status %d, want 504 (the fallback fetch timed out)", w.Code)
	}
	l := oneBotLine(t, &logs)
	render, total := l["render_ms"].(float64), l["total_ms"].(float64)
	if total < 300 || render >= 300 {
		t.Errorf("render_ms %v total_ms %v: want the render's fast failure apart from the 300ms fallback", render, total)
	}
	if l["level"] != "WARN" || l["status"] != 504.0 {
		t.Errorf("level %v status %v, want WARN 504", l["level"], l["status"])
	}
}

func TestBotLogClientAddr(t *testing.T) {
	tests := []struct {
		remote, xff, want string
	}{
		{"192.0.2.1:1234", "", "192.0.2.1"},
		{"192.0.2.1:1234", "6.6.6.6", "192.0.2.1"},                // untrusted peer: its XFF is ignored
		{"10.0.0.5:1234", "66.249.66.1", "66.249.66.1"},           // trusted proxy
		{"10.0.0.5:1234", "6.6.6.6, 66.249.66.1", "66.249.66.1"},  // the client's own claim is not believed
		{"10.0.0.5:1234", "66.249.66.1, 10.0.0.9", "66.249.66.1"}, // a chain of trusted proxies
		{"10.0.0.5:1234", "10.0.0.8, 10.0.0.9", "10.0.0.8"},       // all trusted: the furthest
		{"10.0.0.5:1234", "junk, 66.249.66.1", "66.249.66.1"},     // garbage left of the answer
		{"10.0.0.5:1234", "66.249.66.1, junk", "10.0.0.5"},        // garbage: the last good address
		{"[::ffff:10.0.0.5]:1234", "2001:db8::1", "2001:db8::1"},  // mapped peer, IPv6 client
		{"not-an-addr", "66.249.66.1", "not-an-addr"},
	}
	var logs logBuffer
	h := newHarness(t, withLogBuffer(&logs))
	h.do("GET", "/a", uaGooglebot) // cached: the lines below are hits
	logs.reset()
	for _, tt := range tests {
		h.do("GET", "/a", uaGooglebot, func(r *http.Request) {
			r.RemoteAddr = tt.remote
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
		})
		if got := oneBotLine(t, &logs)["client"]; got != tt.want {
			t.Errorf("RemoteAddr %s XFF %q: client %v, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	long := strings.Repeat("x", 5000)
	h.do("GET", "/a", long)
	if lines := logs.botLines(t); len(lines) != 0 {
		t.Fatalf("a person's request logged a bot line")
	}
	h.do("GET", "/a", "Googlebot "+long)
	if ua := oneBotLine(t, &logs)["ua"].(string); len(ua) > maxLogUA+3 {
		t.Errorf("ua logged with %d bytes, want at most %d", len(ua), maxLogUA+3)
	}
}

// TestBotLogEnded: a render's line says why the render stopped waiting for
// the page and how long the page took to settle; a hit's says neither.
func TestBotLogEnded(t *testing.T) {
	var logs logBuffer
	h := newHarness(t, withLogBuffer(&logs))
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return &prerender.Result{Status: 200, Header: http.Header{"Content-Type": {"text/html"}},
			HTML: []byte("<html><body>ok</body></html>"), Ended: prerender.EndedQuiet, Settle: 420 * time.Millisecond}, nil
	})
	h.do("GET", "/settled", uaGooglebot)
	l := oneBotLine(t, &logs)
	if l["ended"] != prerender.EndedQuiet || l["settle_ms"] != 420.0 {
		t.Errorf("miss: ended %v settle_ms %v, want quiet 420", l["ended"], l["settle_ms"])
	}
	h.do("GET", "/settled", uaGooglebot)
	for _, l := range logs.botLines(t) {
		if _, ok := l["ended"]; ok {
			t.Errorf("hit line with ended %v", l["ended"])
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Renders returns how many requests for path came from PRISM's browser.
func (o *Origin) Renders(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.renders[path]
}

// internal sends one internal API request with key as X-Internal-Auth ("":
// none) and decodes the JSON answer.
func (p *Prism) internal(method, path, body, key string) (int, map[string]any) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.InternalURL+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-Internal-Auth", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		p.t.Fatalf("%s %s: %d, body %q is not a JSON object", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

// api sends an authorized internal API request.
func (p *Prism) api(method, path, body string) (int, map[string]any) {
	p.t.Helper()
	return p.internal(method, path, body, p.Conf.AuthKey)
}

// queue returns host 1's queue counters from /status: level -> total.
func (p *Prism) queue(level string) (total, dueNow int) {
	p.t.Helper()
	code, st := p.api("GET", "/status", "")
	if code != 200 {
		p.t.Fatalf("/status: %d %v", code, st)
	}
	q := st["queues"].(map[string]any)["1"].(map[string]any)[level].(map[string]any)
	return int(q["total"].(float64)), int(q["due_now"].(float64))
}

// idle reports whether host 1's operator queues and the internal queue are empty.
func (p *Prism) idle() bool {
	code, st := p.api("GET", "/status", "")
	if code != 200 {
		return false
	}
	q := st["queues"].(map[string]any)["1"].(map[string]any)
	iq := st["internal_queue"].(map[string]any)["size"].(float64)
	return iq == 0 && q["high"].(map[string]any)["total"].(float64) == 0 &&
		q["normal"].(map[string]any)["total"].(float64) == 0
}

func wantAPIError(t *testing.T, code int, body map[string]any, wantCode int, msg string) {
	t.Helper()
	if code != wantCode || body["status"] != "error" || !strings.Contains(fmt.Sprint(body["message"]), msg) {
		t.Errorf("got %d %v, want %d with message containing %q", code, body, wantCode, msg)
	}
}

// lastTick returns /status daemon.last_tick.
func (p *Prism) lastTick() string {
	_, st := p.api("GET", "/status", "")
	s, _ := st["daemon"].(map[string]any)["last_tick"].(string)
	return s
}

// waitTicks waits until the scheduler has ticked n more times (ticks are 1s).
func (p *Prism) waitTicks(t *testing.T, n int) {
	t.Helper()
	for range n {
		before := p.lastTick()
		waitFor(t, 10*time.Second, "a scheduler tick", func() bool { return p.lastTick() != before })
	}
}

func TestInternalAPI(t *testing.T) {
	origin := newOrigin(t)
	c := newConf(t, origin.URL)
	c.SchedulerControl = true
	p := startPrism(t, c)

	t.Run("auth", func(t *testing.T) {
		for _, key := range []string{"", "wrong", c.AuthKey + "x"} {
			code, body := p.internal("GET", "/status", "", key)
			wantAPIError(t, code, body, 401, "unauthorized")
			code, body = p.internal("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/a"],"priority":"high"}`, key)
			wantAPIError(t, code, body, 401, "unauthorized")
		}
		if code, _ := p.api("GET", "/status", ""); code != 200 {
			t.Fatalf("right key: %d", code)
		}
	})

	t.Run("validation", func(t *testing.T) {
		urls := make([]string, 10001)
		for i := range urls {
			urls[i] = fmt.Sprintf("https://%s/p%d", siteHost, i)
		}
		many, _ := json.Marshal(urls)
		for _, tc := range []struct{ name, path, body, msg string }{
			{"bad JSON", "recache", `{"host_id":1,`, "invalid JSON"},
			{"missing host_id", "recache", `{"urls":["/a"],"priority":"high"}`, "host_id is required"},
			{"unknown host", "recache", `{"host_id":7,"urls":["/a"],"priority":"high"}`, "host 7 not found"},
			{"zero urls", "recache", `{"host_id":1,"urls":[],"priority":"high"}`, "got 0"},
			{"10001 urls", "recache", `{"host_id":1,"urls":` + string(many) + `,"priority":"high"}`, "got 10001"},
			{"url on another host", "recache", `{"host_id":1,"urls":["https://elsewhere.test/a"],"priority":"high"}`, "not on host 1"},
			{"unknown dimension", "recache", `{"host_id":1,"urls":["/a"],"dimension_ids":[3],"priority":"high"}`, "dimension 3 not configured"},
			{"bad priority", "recache", `{"host_id":1,"urls":["/a"],"priority":"asap"}`, "invalid priority"},
			{"missing priority", "recache", `{"host_id":1,"urls":["/a"]}`, "priority is required"},
			{"invalidate bad JSON", "invalidate", `nope`, "invalid JSON"},
			{"invalidate missing host_id", "invalidate", `{"urls":["/a"]}`, "host_id is required"},
			{"invalidate unknown host", "invalidate", `{"host_id":7,"urls":["/a"]}`, "host 7 not found"},
			{"invalidate unknown dimension", "invalidate", `{"host_id":1,"urls":["/a"],"dimension_ids":[9]}`, "dimension 9"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, body := p.api("POST", "/internal/cache/"+tc.path, tc.body)
				wantAPIError(t, code, body, 400, tc.msg)
			})
		}
		if total, _ := p.queue("high"); total != 0 {
			t.Errorf("refused requests queued %d entries", total)
		}
		code, body := p.api("GET", "/internal/nothing", "")
		wantAPIError(t, code, body, 404, "not found")
	})

	t.Run("status shape", func(t *testing.T) {
		p.waitTicks(t, 1) // last_tick is null until the first tick
		code, st := p.api("GET", "/status", "")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		d := st["daemon"].(map[string]any)
		if d["daemon_id"] != "prism-e2e" {
			t.Errorf("daemon_id %v", d["daemon_id"])
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(d["last_tick"])); err != nil {
			t.Errorf("last_tick %v: %v", d["last_tick"], err)
		}
		if _, ok := d["uptime_seconds"].(float64); !ok {
			t.Errorf("uptime_seconds %v", d["uptime_seconds"])
		}
		iq := st["internal_queue"].(map[string]any)
		rc := st["rs_capacity"].(map[string]any)
		for _, f := range []string{"size", "max_size", "capacity_used_percent"} {
			if _, ok := iq[f].(float64); !ok {
				t.Errorf("internal_queue.%s = %v", f, iq[f])
			}
		}
		for _, f := range []string{"total_free_tabs", "reserved_for_online", "available_for_recache", "reservation_percent"} {
			if _, ok := rc[f].(float64); !ok {
				t.Errorf("rs_capacity.%s = %v", f, rc[f])
			}
		}
		if rc["reservation_percent"] != 50.0 || iq["max_size"] != 1000.0 {
			t.Errorf("rs_capacity %v internal_queue %v", rc, iq)
		}
		for _, level := range []string{"high", "normal", "autorecache"} {
			p.queue(level) // fails the test when absent
		}
	})

	t.Run("recached URLs become HITs in each dimension", func(t *testing.T) {
		code, body := p.api("POST", "/internal/cache/recache",
			`{"host_id":1,"urls":["https://`+siteHost+`/rc/one","/rc/two?b=2&a=1"],"priority":"high"}`)
		want := map[string]any{"host_id": 1.0, "urls_count": 2.0, "dimension_ids_count": 2.0, "entries_enqueued": 4.0, "priority": "high"}
		if code != 200 || body["status"] != "ok" || fmt.Sprint(body["data"]) != fmt.Sprint(want) {
			t.Fatalf("recache: %d %v, want data %v", code, body, want)
		}
		waitFor(t, 60*time.Second, "the recache to finish", func() bool {
			return origin.Renders("/rc/one") >= 2 && origin.Renders("/rc/two") >= 2 && p.idle()
		})
		for _, tc := range []struct{ ua, dim, width string }{
			{desktopBot, "desktop", "width=1366"}, {mobileBot, "mobile", "width=412"},
		} {
			for _, path := range []string{"/rc/one", "/rc/two?a=1&b=2"} {
				r := p.Get(path, tc.ua)
				if got := r.Header.Get("X-Prism-Cache"); got != "HIT" {
					t.Errorf("%s %s: X-Prism-Cache %q, want HIT", tc.dim, path, got)
				}
				if got := r.Header.Get("X-Prism-Dimension"); got != tc.dim {
					t.Errorf("%s %s: X-Prism-Dimension %q", tc.dim, path, got)
				}
				contains(t, tc.dim+" "+path, r.Body, "Rendered by JS", tc.width)
			}
		}
		// Each stored entry got its next autorecache.
		if total, due := p.queue("autorecache"); total < 4 || due != 0 {
			t.Errorf("autorecache queue total %d due %d, want >= 4 entries due in 12h", total, due)
		}
	})

	t.Run("invalidate makes the next request a MISS", func(t *testing.T) {
		for _, ua := range []string{desktopBot, mobileBot} {
			p.Get("/inv/page", ua)
			if got := p.Get("/inv/page", ua).Header.Get("X-Prism-Cache"); got != "HIT" {
				t.Fatalf("before invalidate: %q, want HIT", got)
			}
		}
		code, body := p.api("POST", "/internal/cache/invalidate",
			`{"host_id":1,"urls":["https://`+siteHost+`/inv/page","/inv/never-cached"],"dimension_ids":[]}`)
		want := map[string]any{"host_id": 1.0, "urls_count": 2.0, "dimension_ids_count": 2.0, "entries_invalidated": 2.0}
		if code != 200 || fmt.Sprint(body["data"]) != fmt.Sprint(want) {
			t.Fatalf("invalidate: %d %v, want data %v", code, body, want)
		}
		for _, ua := range []string{desktopBot, mobileBot} {
			if got := p.Get("/inv/page", ua).Header.Get("X-Prism-Cache"); got != "MISS" {
				t.Errorf("after invalidate: %q, want MISS", got)
			}
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		code, body := p.api("POST", "/internal/scheduler/pause", "")
		if code != 200 || body["message"] != "Scheduler paused" {
			t.Fatalf("pause: %d %v", code, body)
		}
		code, body = p.api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/paused"],"dimension_ids":[1],"priority":"normal"}`)
		if code != 200 {
			t.Fatalf("recache while paused: %d %v", code, body)
		}
		p.waitTicks(t, 3)
		if n := origin.Renders("/paused"); n != 0 {
			t.Fatalf("%d renders while paused", n)
		}
		if total, due := p.queue("normal"); total != 1 || due != 1 {
			t.Fatalf("normal queue %d/%d while paused, want 1/1", total, due)
		}
		code, body = p.api("POST", "/internal/scheduler/resume", "")
		if code != 200 || body["message"] != "Scheduler resumed" {
			t.Fatalf("resume: %d %v", code, body)
		}
		waitFor(t, 60*time.Second, "the render after resume", func() bool { return origin.Renders("/paused") >= 1 && p.idle() })
		if got := p.Get("/paused", desktopBot).Header.Get("X-Prism-Cache"); got != "HIT" {
			t.Errorf("after resume: %q, want HIT", got)
		}
	})
}

func TestInternalSchedulerControlDisabled(t *testing.T) {
	origin := newOrigin(t)
	p := startPrism(t, newConf(t, origin.URL)) // scheduler_control_api = false
	for _, path := range []string{"/internal/scheduler/pause", "/internal/scheduler/resume"} {
		code, body := p.api("POST", path, "")
		wantAPIError(t, code, body, 403, "Scheduler control API not enabled")
	}
}

func TestInternalRecacheSurvivesSIGKILL(t *testing.T) {
	origin := newOrigin(t)
	c := newConf(t, origin.URL)
	c.SchedulerControl = true
	p := startPrism(t, c)
	if code, body := p.api("POST", "/internal/scheduler/pause", ""); code != 200 {
		t.Fatalf("pause: %d %v", code, body)
	}
	code, body := p.api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/durable"],"priority":"high"}`)
	if code != 200 {
		t.Fatalf("recache: %d %v", code, body)
	}
	p.Kill()

	q := startPrism(t, c) // same dir: cache, journal, pause flag
	// Still paused after the restart: the accepted entries wait.
	q.waitTicks(t, 2)
	if total, due := q.queue("high"); total != 2 || due != 2 {
		t.Fatalf("high queue after restart %d/%d, want 2/2", total, due)
	}
	if n := origin.Renders("/durable"); n != 0 {
		t.Fatalf("%d renders while paused", n)
	}
	if code, body := q.api("POST", "/internal/scheduler/resume", ""); code != 200 {
		t.Fatalf("resume: %d %v", code, body)
	}
	waitFor(t, 60*time.Second, "the replayed recache", func() bool { return origin.Renders("/durable") >= 2 && q.idle() })
	for _, ua := range []string{desktopBot, mobileBot} {
		if got := q.Get("/durable", ua).Header.Get("X-Prism-Cache"); got != "HIT" {
			t.Errorf("after replay: %q, want HIT", got)
		}
	}
}

package internalapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

const authKey = "s3cret-internal-key"

var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

type env struct {
	srv   *httptest.Server
	api   *server
	sched *recache.Scheduler
	store *cachestore.Store
	sites *site.Table

	mu      sync.Mutex
	now     time.Time
	renders []cachestore.Key
}

func (e *env) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) refresh(ctx context.Context, k cachestore.Key, _ prerender.Class) (fill.Outcome, error) {
	return fill.Outcome{}, e.refreshKey(ctx, k)
}

func (e *env) refreshKey(_ context.Context, k cachestore.Key) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.renders = append(e.renders, k)
	return nil
}

// newEnv starts the internal API over a real scheduler (fake renders, no
// capacity unless the test ticks with some), a real store, and two hosts:
// 1 "example.com" (alias www.example.com) with dimensions 1 and 2, and 2
// "other.test" with dimension 5.
func newEnv(t testing.TB, control bool, mods ...func(*Options)) *env {
	t.Helper()
	e := &env{now: epoch}
	quiet := slog.New(slog.DiscardHandler)
	origin := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	sites, err := site.New(site.Options{Hosts: []site.Host{
		{ID: 1, Name: "example.com", Aliases: []string{"www.example.com"}, Origin: origin, Dimensions: []site.Dimension{
			{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot"}},
			{ID: 2, Name: "mobile", MatchUA: []string{"iPhone"}, Mobile: true},
		}},
		{ID: 2, Name: "other.test", Origin: origin, Dimensions: []site.Dimension{
			{ID: 5, Name: "desktop", MatchUA: []string{"bingbot"}},
		}},
	}})
	if err != nil {
		t.Fatalf("site.New: %v", err)
	}
	e.sites = sites
	e.store, err = cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatalf("cachestore.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	storeDone := make(chan error, 1)
	go func() { storeDone <- e.store.Run(ctx) }()
	e.sched, err = recache.New(recache.Options{
		Sites: sites, Refresh: e.refresh, Capacity: func() int { return 0 },
		JournalDir: t.TempDir(), Now: e.Now, Tick: 24 * time.Hour, Logger: quiet,
	})
	if err != nil {
		t.Fatalf("recache.New: %v", err)
	}
	opts := Options{
		Sites: sites, Scheduler: e.sched, Store: e.store,
		Capacity: func() prerender.Capacity {
			return prerender.Capacity{Tabs: 12, Free: 10, ReservedForOnline: 5, AvailableForRecache: 5, ReservationPercent: 50}
		},
		AuthKey: authKey, SchedulerControl: control, DaemonID: "cache-daemon-01",
		Start: epoch.Add(-time.Hour), Now: e.Now, Logger: quiet,
	}
	for _, m := range mods {
		m(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.api = h.(*server)
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		e.srv.Close()
		cancel()
		<-storeDone
		e.sched.Close()
		e.store.Close()
	})
	return e
}

type reply struct {
	code int
	body map[string]any
	raw  string
	hdr  http.Header
}

func (e *env) do(t *testing.T, method, path, body string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Internal-Auth", authKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, raw: string(raw), hdr: resp.Header}
	if method != http.MethodHead {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
	}
	return r
}

func (e *env) post(t *testing.T, path, body string) reply {
	t.Helper()
	return e.do(t, http.MethodPost, path, body, nil)
}

// wantError checks a spec error answer: code, status "error", and a
// message containing msg.
func wantError(t *testing.T, r reply, code int, msg string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r.raw)
	}
	if r.body["status"] != "error" || len(r.body) != 2 {
		t.Fatalf("body %s, want {status: error, message}", r.raw)
	}
	m, _ := r.body["message"].(string)
	if !strings.Contains(m, msg) {
		t.Fatalf("message %q, want it to contain %q", m, msg)
	}
}

func TestNewRequiresAuthKey(t *testing.T) {
	_, err := New(Options{})
	if err != ErrNoAuthKey {
		t.Fatalf("New without key: %v, want ErrNoAuthKey", err)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, true)
	for _, tc := range []struct {
		name, key string
		code      int
	}{
		{"none", "", 401},
		{"wrong", "nope", 401},
		{"prefix", authKey[:5], 401},
		{"longer", authKey + "x", 401},
		{"right", authKey, 200},
	} {
		for _, ep := range []struct{ method, path string }{
			{"GET", "/status"}, {"POST", "/internal/cache/recache"}, {"POST", "/internal/scheduler/pause"},
			{"GET", "/nope"},
		} {
			t.Run(tc.name+ep.path, func(t *testing.T) {
				r := e.do(t, ep.method, ep.path, "{}", map[string]string{"X-Internal-Auth": tc.key})
				if tc.code == 401 {
					wantError(t, r, 401, "unauthorized")
					return
				}
				if r.code == 401 {
					t.Fatalf("right key refused: %s", r.raw)
				}
			})
		}
	}
}

func TestRecacheValidation(t *testing.T) {
	e := newEnv(t, false)
	many := func(n int) string {
		u := make([]string, n)
		for i := range u {
			u[i] = fmt.Sprintf("https://example.com/p%d", i)
		}
		b, _ := json.Marshal(u)
		return string(b)
	}
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"empty body", ``, "invalid JSON"},
		{"bad json", `{"host_id": 1,`, "invalid JSON"},
		{"not an object", `[1,2]`, "JSON object"},
		{"trailing garbage", `{"host_id":1,"urls":["/a"],"priority":"high"} x`, "after the object"},
		{"two objects", `{"host_id":1,"urls":["/a"],"priority":"high"}{}`, "after the object"},
		{"unknown field", `{"host_id":1,"urls":["/a"],"priority":"high","dimension_id":[1]}`, "dimension_id"},
		{"host_id string", `{"host_id":"1","urls":["/a"],"priority":"high"}`, "host_id"},
		{"host_id float", `{"host_id":1.5,"urls":["/a"],"priority":"high"}`, "host_id"},
		{"missing host_id", `{"urls":["https://example.com/"],"priority":"high"}`, "host_id is required"},
		{"null body", `null`, "host_id is required"},
		{"unknown host", `{"host_id":9,"urls":["https://example.com/"],"priority":"high"}`, "host 9 not found"},
		{"missing urls", `{"host_id":1,"priority":"high"}`, "urls is required"},
		{"zero urls", `{"host_id":1,"urls":[],"priority":"high"}`, "got 0"},
		{"10001 urls", `{"host_id":1,"urls":` + many(10001) + `,"priority":"high"}`, "got 10001"},
		{"url on another host", `{"host_id":1,"urls":["https://example.com/a","https://other.test/b"],"priority":"high"}`, "urls[1]"},
		{"url on unknown host", `{"host_id":1,"urls":["https://evil.example/"],"priority":"high"}`, "not on host 1"},
		{"relative url", `{"host_id":1,"urls":["page"],"priority":"high"}`, "invalid URL"},
		{"ftp url", `{"host_id":1,"urls":["ftp://example.com/"],"priority":"high"}`, "invalid URL"},
		{"escaping path", `{"host_id":1,"urls":["/a/%zz"],"priority":"high"}`, "invalid URL"},
		{"huge url", `{"host_id":1,"urls":["/` + strings.Repeat("a", 9000) + `"],"priority":"high"}`, "longer than"},
		{"unknown dimension", `{"host_id":1,"urls":["/a"],"dimension_ids":[1,5],"priority":"high"}`, "dimension 5 not configured for host 1"},
		{"missing priority", `{"host_id":1,"urls":["/a"]}`, "priority is required"},
		{"bad priority", `{"host_id":1,"urls":["/a"],"priority":"urgent"}`, "invalid priority"},
		{"autorecache priority", `{"host_id":1,"urls":["/a"],"priority":"autorecache"}`, "invalid priority"},
		{"priority number", `{"host_id":1,"urls":["/a"],"priority":1}`, "priority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.post(t, "/internal/cache/recache", tc.body), 400, tc.msg)
			st := e.sched.Status()
			for id, hs := range st.Hosts {
				if hs != (recache.HostStatus{}) {
					t.Fatalf("host %d queues %+v after a refused request", id, hs)
				}
			}
		})
	}
}

func TestRecacheCounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want map[string]any
		high int // entries in host 1's high queue afterwards
	}{
		{"example", `{"host_id":1,"urls":["https://example.com/page1","https://example.com/page2"],"dimension_ids":[1,2],"priority":"high"}`,
			map[string]any{"host_id": 1.0, "urls_count": 2.0, "dimension_ids_count": 2.0, "entries_enqueued": 4.0, "priority": "high"}, 4},
		{"all dimensions when absent", `{"host_id":1,"urls":["/a"],"priority":"normal"}`,
			map[string]any{"host_id": 1.0, "urls_count": 1.0, "dimension_ids_count": 2.0, "entries_enqueued": 2.0, "priority": "normal"}, 0},
		{"all dimensions when empty", `{"host_id":1,"urls":["/a"],"dimension_ids":[],"priority":"high"}`,
			map[string]any{"host_id": 1.0, "urls_count": 1.0, "dimension_ids_count": 2.0, "entries_enqueued": 2.0, "priority": "high"}, 2},
		{"duplicates collapse", `{"host_id":1,"urls":["https://example.com/a?b=2&a=1","/a?a=1&b=2","https://WWW.example.com/a?a=1&b=2&utm_source=x"],"dimension_ids":[2,2],"priority":"high"}`,
			map[string]any{"host_id": 1.0, "urls_count": 3.0, "dimension_ids_count": 1.0, "entries_enqueued": 1.0, "priority": "high"}, 1},
		{"alias and path", `{"host_id":1,"urls":["http://www.example.com/x","/y"],"dimension_ids":[1],"priority":"high"}`,
			map[string]any{"host_id": 1.0, "urls_count": 2.0, "dimension_ids_count": 1.0, "entries_enqueued": 2.0, "priority": "high"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false)
			r := e.post(t, "/internal/cache/recache", tc.body)
			if r.code != 200 {
				t.Fatalf("status %d: %s", r.code, r.raw)
			}
			want := map[string]any{"status": "ok", "data": tc.want}
			if !reflect.DeepEqual(r.body, want) {
				t.Fatalf("body %s\nwant %v", r.raw, want)
			}
			if got := e.sched.Status().Hosts[1].High.Total; got != tc.high {
				t.Fatalf("high queue %d, want %d", got, tc.high)
			}
		})
	}
	t.Run("10000 urls", func(t *testing.T) {
		e := newEnv(t, false)
		u := make([]string, 10000)
		for i := range u {
			u[i] = fmt.Sprintf("https://example.com/catalog/%d?x=%d", i, i)
		}
		b, _ := json.Marshal(map[string]any{"host_id": 1, "urls": u, "priority": "normal"})
		r := e.post(t, "/internal/cache/recache", string(b))
		if r.code != 200 || r.body["data"].(map[string]any)["entries_enqueued"] != 20000.0 {
			t.Fatalf("status %d body %.300s", r.code, r.raw)
		}
	})
}

func key(h, d int, u string) cachestore.Key {
	return cachestore.Key{HostID: h, DimensionID: d, URL: u}
}

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t, false)
	for _, k := range []cachestore.Key{key(1, 1, "/a"), key(1, 2, "/a"), key(1, 1, "/b"), key(2, 5, "/a")} {
		if err := e.store.Put(&cachestore.Entry{Key: k, Status: 200, Body: gz("<p>x</p>"), RenderedAt: epoch}); err != nil {
			t.Fatal(err)
		}
	}
	// A queued recache of an invalidated key is dropped too.
	if _, err := e.sched.Enqueue([]cachestore.Key{key(1, 1, "/a"), key(1, 1, "/c")}, recache.High); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"bad json", `{`, "invalid JSON"},
		{"missing host_id", `{"urls":["/a"]}`, "host_id is required"},
		{"unknown host", `{"host_id":3,"urls":["/a"]}`, "host 3 not found"},
		{"zero urls", `{"host_id":1,"urls":[]}`, "got 0"},
		{"other host", `{"host_id":1,"urls":["https://other.test/a"]}`, "not on host 1"},
		{"unknown dimension", `{"host_id":1,"urls":["/a"],"dimension_ids":[5]}`, "dimension 5"},
		{"priority is not a field here", `{"host_id":1,"urls":["/a"],"priority":"high"}`, "priority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.post(t, "/internal/cache/invalidate", tc.body), 400, tc.msg)
		})
	}
	r := e.post(t, "/internal/cache/invalidate", `{"host_id":1,"urls":["https://example.com/a","/b","/never"],"dimension_ids":[]}`)
	want := map[string]any{"status": "ok", "data": map[string]any{
		"host_id": 1.0, "urls_count": 3.0, "dimension_ids_count": 2.0, "entries_invalidated": 3.0}}
	if r.code != 200 || !reflect.DeepEqual(r.body, want) {
		t.Fatalf("status %d body %s, want %v", r.code, r.raw, want)
	}
	for _, k := range []cachestore.Key{key(1, 1, "/a"), key(1, 2, "/a"), key(1, 1, "/b")} {
		if _, ok := e.store.Get(k); ok {
			t.Errorf("%v still stored", k)
		}
	}
	if _, ok := e.store.Get(key(2, 5, "/a")); !ok {
		t.Error("other host's entry was removed")
	}
	if got := e.sched.Status().Hosts[1].High.Total; got != 1 { // /c stays
		t.Fatalf("high queue %d after invalidate, want 1", got)
	}
	// Again: nothing left to invalidate.
	r = e.post(t, "/internal/cache/invalidate", `{"host_id":1,"urls":["/a"],"dimension_ids":[1]}`)
	if got := r.body["data"].(map[string]any)["entries_invalidated"]; got != 0.0 {
		t.Fatalf("second invalidate counted %v", got)
	}
}

func TestStatusShape(t *testing.T) {
	e := newEnv(t, false)
	r := e.do(t, "GET", "/status", "", nil)
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.raw)
	}
	zero := map[string]any{"total": 0.0, "due_now": 0.0}
	want := map[string]any{
		"daemon":         map[string]any{"daemon_id": "cache-daemon-01", "uptime_seconds": 3600.0, "last_tick": nil},
		"internal_queue": map[string]any{"size": 0.0, "max_size": 1000.0, "capacity_used_percent": 0.0},
		"rs_capacity": map[string]any{"total_free_tabs": 10.0, "reserved_for_online": 5.0,
			"available_for_recache": 5.0, "reservation_percent": 50.0},
		"queues": map[string]any{
			"1": map[string]any{"high": zero, "normal": zero, "autorecache": zero},
			"2": map[string]any{"high": zero, "normal": zero, "autorecache": zero},
		},
	}
	if !reflect.DeepEqual(r.body, want) {
		t.Fatalf("status before any tick:\n got %s\nwant %v", r.raw, want)
	}

	// Queue work, tick, and look again.
	if _, err := e.sched.Enqueue([]cachestore.Key{key(1, 1, "/a"), key(1, 2, "/a")}, recache.High); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sched.Enqueue([]cachestore.Key{key(2, 5, "/n")}, recache.Normal); err != nil {
		t.Fatal(err)
	}
	e.sched.Track(&cachestore.Entry{Key: key(1, 1, "/auto"), RenderedAt: epoch})
	e.sched.Tick(epoch) // capacity 0: nothing dispatched
	e.mu.Lock()
	e.now = epoch.Add(90 * time.Second)
	e.mu.Unlock()
	r = e.do(t, "GET", "/status", "", nil)
	d := r.body["daemon"].(map[string]any)
	if d["last_tick"] != epoch.Format(time.RFC3339) || d["uptime_seconds"] != 3690.0 {
		t.Fatalf("daemon %v", d)
	}
	q := r.body["queues"].(map[string]any)
	wantQ := map[string]any{
		"1": map[string]any{"high": map[string]any{"total": 2.0, "due_now": 2.0}, "normal": zero,
			"autorecache": map[string]any{"total": 1.0, "due_now": 0.0}},
		"2": map[string]any{"high": zero, "normal": map[string]any{"total": 1.0, "due_now": 1.0}, "autorecache": zero},
	}
	if !reflect.DeepEqual(q, wantQ) {
		t.Fatalf("queues %v\nwant %v", q, wantQ)
	}
	if r := e.do(t, "HEAD", "/status", "", nil); r.code != 200 {
		t.Fatalf("HEAD /status: %d", r.code)
	}
}

func TestSchedulerControl(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		e := newEnv(t, false)
		for _, p := range []string{"/internal/scheduler/pause", "/internal/scheduler/resume"} {
			wantError(t, e.post(t, p, ""), 403, "Scheduler control API not enabled")
		}
		if e.sched.Paused() {
			t.Fatal("paused through a disabled API")
		}
	})
	t.Run("enabled", func(t *testing.T) {
		e := newEnv(t, true)
		r := e.post(t, "/internal/scheduler/pause", "")
		if want := map[string]any{"status": "ok", "message": "Scheduler paused"}; r.code != 200 || !reflect.DeepEqual(r.body, want) {
			t.Fatalf("pause: %d %s", r.code, r.raw)
		}
		if !e.sched.Paused() {
			t.Fatal("not paused")
		}
		// Paused: recache is still accepted.
		r = e.post(t, "/internal/cache/recache", `{"host_id":1,"urls":["/a"],"priority":"high"}`)
		if r.code != 200 {
			t.Fatalf("recache while paused: %d %s", r.code, r.raw)
		}
		r = e.post(t, "/internal/scheduler/resume", "")
		if want := map[string]any{"status": "ok", "message": "Scheduler resumed"}; r.code != 200 || !reflect.DeepEqual(r.body, want) {
			t.Fatalf("resume: %d %s", r.code, r.raw)
		}
		if e.sched.Paused() {
			t.Fatal("still paused")
		}
	})
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, true)
	for _, tc := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/", 404, "not found"},
		{"GET", "/internal/cache/nope", 404, "not found"},
		{"POST", "/statusx", 404, "not found"},
		{"GET", "/internal/cache/recache", 405, "method not allowed"},
		{"PUT", "/internal/cache/invalidate", 405, "method not allowed"},
		{"POST", "/status", 405, "method not allowed"},
		{"GET", "/internal/scheduler/pause", 405, "method not allowed"},
		{"DELETE", "/internal/scheduler/resume", 405, "method not allowed"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, "", nil)
			wantError(t, r, tc.code, tc.msg)
			if tc.code == 405 && r.hdr.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, false)
	e.api.maxBody = 4096 // the real bound (32 MiB) takes long to fill under -race
	body := `{"host_id":1,"urls":["/` + strings.Repeat("a", 5000) + `"],"priority":"high"}`
	wantError(t, e.post(t, "/internal/cache/recache", body), 400, "larger than")
}

func FuzzRecacheBody(f *testing.F) {
	for _, s := range []string{
		`{"host_id":1,"urls":["https://example.com/page1"],"dimension_ids":[1,2],"priority":"high"}`,
		`{"host_id":1,"urls":["/a?b=1&a=2"],"priority":"normal"}`,
		`{"host_id":2,"urls":["https://other.test/%2e%2e/x"],"dimension_ids":[5],"priority":"high"}`,
		`{"host_id":1,"urls":[""],"priority":"high"}`,
		`{"host_id":-1}`, `[]`, `null`, `{"urls":null}`, "\x00", `{"host_id":1e400}`,
	} {
		f.Add(s)
	}
	e := newEnv(f, false)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/internal/cache/recache", "/internal/cache/invalidate"} {
			r := e.post(t, path, body)
			if r.code != 200 && r.code != 400 {
				t.Fatalf("%s %q: status %d %s", path, body, r.code, r.raw)
			}
			if r.code == 400 && r.body["status"] != "error" {
				t.Fatalf("%s %q: body %s", path, body, r.raw)
			}
		}
	})
}

func TestPanicAnswers500(t *testing.T) {
	e := newEnv(t, false)
	e.api.opts.Capacity = func() prerender.Capacity { panic("capacity exploded") }
	r := e.do(t, http.MethodGet, "/status", "", nil)
	if r.code != http.StatusInternalServerError || r.body["status"] != "error" || r.body["message"] != "internal error" {
		t.Errorf("panicking handler: %d %v, want 500 {status: error, message: internal error}", r.code, r.body)
	}
	// The server goes on answering.
	if r := e.do(t, http.MethodGet, "/status", "", map[string]string{"X-Internal-Auth": "wrong"}); r.code != http.StatusUnauthorized {
		t.Errorf("after a panic: %d, want 401", r.code)
	}
}

package adminapi

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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

const testToken = "s3cret-token"

// env is a running admin Server with a real store, a real site table whose
// hosts are served by one httptest origin, and a fake Refresh.
type env struct {
	t      testing.TB
	srv    *Server
	http   *httptest.Server
	origin *httptest.Server
	store  *cachestore.Store
	sites  *site.Table
	sched  *recache.Scheduler

	// origin content: path -> body, and header checks
	mu          sync.Mutex
	files       map[string][]byte
	noRenderHdr atomic.Int64 // origin requests without X-Prism-Render: 1

	refreshes atomic.Int64
	block     chan struct{} // when non-nil, Refresh waits for it
	failURL   string        // Refresh fails for keys with this URL
	status5xx string        // Refresh answers a 503 page (fill.StatusError) for keys with this URL
	noCap     atomic.Int64  // Refresh answers ErrNoCapacity this many times first
	classes   sync.Map      // cachestore.Key -> prerender.Class of the last Refresh
	tracked   sync.Map      // cachestore.Key -> times Options.Track was told of it
}

type envOption func(*Options, *env)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, files: map[string][]byte{}}
	e.origin = httptest.NewServer(http.HandlerFunc(e.serveOrigin))
	t.Cleanup(e.origin.Close)
	ou, err := url.Parse(e.origin.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.sites, err = site.New(site.Options{Hosts: []site.Host{
		{ID: 1, Name: "example.com", Aliases: []string{"www.example.com"}, Origin: ou, Dimensions: []site.Dimension{
			{ID: 1, Name: "desktop", MatchUA: []string{"Googlebot"}},
			{ID: 2, Name: "mobile", MatchUA: []string{"Mobile"}, Mobile: true},
		}},
		{ID: 2, Name: "shop.test", Origin: ou, Dimensions: []site.Dimension{
			{ID: 7, Name: "desktop", MatchUA: []string{"bingbot"}},
		}},
	}})
	if err != nil {
		t.Fatalf("site.New: %v", err)
	}
	e.store, err = cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatalf("cachestore.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	storeDone := make(chan struct{})
	go func() { defer close(storeDone); e.store.Run(ctx) }()
	waitFor(t, "store index ready", func() bool { return e.store.Stats().IndexReady })

	// Warmups go through a real scheduler, rendering with the fake Refresh.
	e.sched, err = recache.New(recache.Options{
		Sites:      e.sites,
		Refresh:    e.refresh,
		Capacity:   func() int { return 2 },
		Store:      e.store,
		ServedOnly: true,
		Tick:       5 * time.Millisecond,
		Workers:    2,
		Backoff:    time.Millisecond,
		JournalDir: t.TempDir(),
		Logger:     quietLogger(),
	})
	if err != nil {
		t.Fatalf("recache.New: %v", err)
	}
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); e.sched.Run(ctx) }()

	o := Options{
		Token:   testToken,
		Sites:   e.sites,
		Store:   e.store,
		Refresh: e.refresh,
		Warm:    e.sched.Warm,
		Track: func(ent *cachestore.Entry) {
			n, _ := e.tracked.LoadOrStore(ent.Key, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		},
		Metrics: metricdoc.NewSet(),
		Logger:  quietLogger(),
	}
	for _, f := range opts {
		f(&o, e)
	}
	e.srv, err = New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runDone := make(chan struct{})
	go func() { defer close(runDone); e.srv.Run(ctx) }()
	waitFor(t, "server running", e.srv.running.Load)
	e.http = httptest.NewServer(e.srv)
	t.Cleanup(func() {
		e.http.Close()
		if e.block != nil {
			select {
			case <-e.block:
			default:
				close(e.block)
			}
		}
		cancel()
		<-runDone
		<-schedDone
		e.sched.Close()
		<-storeDone
		e.store.Close()
	})
	return e
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) serveOrigin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Prism-Render") != "1" {
		e.noRenderHdr.Add(1)
	}
	e.mu.Lock()
	b, ok := e.files[r.URL.Path]
	e.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if strings.HasSuffix(r.URL.Path, ".gz") {
		w.Header().Set("Content-Type", "application/gzip")
	} else {
		w.Header().Set("Content-Type", "application/xml")
	}
	w.Write(b)
}

func (e *env) setFile(path string, body []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.files[path] = body
}

// refresh is the fake fill.Pipeline.Refresh: it stores a small page for k.
func (e *env) refresh(ctx context.Context, k cachestore.Key, class prerender.Class) (fill.Outcome, error) {
	e.refreshes.Add(1)
	e.classes.Store(k, class)
	if e.block != nil {
		select {
		case <-e.block:
		case <-ctx.Done():
			return fill.Outcome{}, ctx.Err()
		}
	}
	if e.noCap.Load() > 0 && e.noCap.Add(-1) >= 0 {
		return fill.Outcome{}, prerender.ErrNoCapacity
	}
	if e.status5xx != "" && k.URL == e.status5xx {
		return fill.Outcome{}, &fill.StatusError{URL: "https://example.com" + k.URL, Status: 503}
	}
	if e.failURL != "" && k.URL == e.failURL {
		return fill.Outcome{}, fmt.Errorf("render https://internal.example/%s: dial 10.0.0.7: %w", k.URL, prerender.ErrUnavailable)
	}
	prev := fill.CacheMiss
	if _, ok := e.store.Get(k); ok {
		prev = fill.CacheHit
	}
	ent := &cachestore.Entry{
		Key:    k,
		Status: 200,
		Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
		Body:   gz([]byte(pageHTML(k))),
	}
	if err := e.store.Put(ent); err != nil {
		return fill.Outcome{}, err
	}
	return fill.Outcome{Entry: ent, Stored: true, Previous: prev, Duration: 12 * time.Millisecond}, nil
}

func pageHTML(k cachestore.Key) string {
	return "<!DOCTYPE html><html><body>" + k.String() + "</body></html>"
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// put stores a page directly.
func (e *env) put(host, dim int, u string) cachestore.Key {
	e.t.Helper()
	k := cachestore.Key{HostID: host, DimensionID: dim, URL: u}
	if err := e.store.Put(&cachestore.Entry{Key: k, Status: 200, Body: gz([]byte(pageHTML(k)))}); err != nil {
		e.t.Fatalf("Put %v: %v", k, err)
	}
	return k
}

func (e *env) has(k cachestore.Key) bool {
	_, ok := e.store.Get(k)
	return ok
}

// do sends a request with the test token and returns status and body.
func (e *env) do(method, path, body string) (int, []byte) {
	e.t.Helper()
	return e.doAuth(method, path, body, "Bearer "+testToken)
}

func (e *env) doAuth(method, path, body, auth string) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// decode unmarshals b into a generic map.
func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// warmupStatus fetches /warmup/status.
func (e *env) warmupStatus() warmupStatus {
	e.t.Helper()
	code, b := e.do("GET", "/warmup/status", "")
	if code != 200 {
		e.t.Fatalf("GET /warmup/status = %d %s", code, b)
	}
	var st warmupStatus
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) waitWarmupDone() warmupStatus {
	e.t.Helper()
	var st warmupStatus
	waitFor(e.t, "warmup completed", func() bool {
		st = e.warmupStatus()
		return st.Status == "completed"
	})
	return st
}

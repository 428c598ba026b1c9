package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/prerender"
)

func urlset(locs ...string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">`)
	for _, l := range locs {
		fmt.Fprintf(&b, "\n  <url><loc>%s</loc><lastmod>2026-01-01</lastmod></url>", l)
	}
	b.WriteString("\n</urlset>\n")
	return []byte(b.String())
}

func sitemapindex(locs ...string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">`)
	for _, l := range locs {
		fmt.Fprintf(&b, "\n  <sitemap><loc>%s</loc></sitemap>", l)
	}
	b.WriteString("\n</sitemapindex>\n")
	return []byte(b.String())
}

func (e *env) startWarmup(sitemap string) {
	e.t.Helper()
	code, body := e.do("POST", "/warmup", `{"sitemap_url":`+quote(sitemap)+`}`)
	if code != http.StatusAccepted {
		e.t.Fatalf("POST /warmup = %d %s", code, body)
	}
	if got := decode(e.t, body); !reflect.DeepEqual(got, map[string]any{"status": "warmup started"}) {
		e.t.Fatalf("POST /warmup body = %v", got)
	}
}

func keysFor(host int, dims []int, urls ...string) []cachestore.Key {
	var ks []cachestore.Key
	for _, u := range urls {
		for _, d := range dims {
			ks = append(ks, cachestore.Key{HostID: host, DimensionID: d, URL: u})
		}
	}
	return ks
}

func TestWarmup(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string][]byte
		sitemap   string
		wantTotal int64
		wantErrs  int64
		cached    []cachestore.Key
		failed    []string // the failed URLs listed, in any order
	}{
		{
			name: "plain sitemap",
			files: map[string][]byte{"/sitemap.xml": urlset(
				"https://example.com/a", "https://example.com/b",
				"https://example.com/a?utm_source=mail", // duplicate of /a after normalization
				"  https://shop.test/c  ",
			)},
			sitemap:   "https://example.com/sitemap.xml",
			wantTotal: 5,
			cached:    append(keysFor(1, []int{1, 2}, "/a", "/b"), keysFor(2, []int{7}, "/c")...),
		},
		{
			name: "index with a gzip child",
			files: map[string][]byte{
				"/index.xml":   sitemapindex("https://example.com/s1.xml", "https://www.example.com/s2.xml.gz"),
				"/s1.xml":      urlset("https://example.com/p1", "https://example.com/p2"),
				"/s2.xml.gz":   gz(urlset("https://example.com/p3", "https://example.com/p2")),
				"/unused.xml":  urlset("https://example.com/never"),
				"/sitemap.xml": urlset("https://example.com/never"),
			},
			sitemap:   "https://example.com/index.xml",
			wantTotal: 6,
			cached:    keysFor(1, []int{1, 2}, "/p1", "/p2", "/p3"),
		},
		{
			name: "gzip root, nested index",
			files: map[string][]byte{
				"/root.xml.gz": gz(sitemapindex("https://example.com/mid.xml")),
				"/mid.xml":     sitemapindex("https://shop.test/leaf.xml"),
				"/leaf.xml":    urlset("https://shop.test/l1", "https://shop.test/l2"),
			},
			sitemap:   "https://example.com/root.xml.gz",
			wantTotal: 2,
			cached:    keysFor(2, []int{7}, "/l1", "/l2"),
		},
		{
			name: "bad urls and children are skipped and counted",
			files: map[string][]byte{
				"/index.xml": sitemapindex(
					"https://example.com/good.xml",
					"https://evil.com/s.xml",       // off-host: error
					"https://example.com/404.xml",  // not found: error
					"https://example.com/html.xml", // not a sitemap: error
					"https://example.com/good.xml", // duplicate: ignored
				),
				"/good.xml": urlset("https://example.com/g", "https://evil.com/x", "http://127.0.0.1/y", "/relative", "https://example.com/../../etc"),
				"/html.xml": []byte("<html><body>hi</body></html>"),
			},
			sitemap:   "https://example.com/index.xml",
			wantTotal: 2 + 3 + 4,
			wantErrs:  3 + 4,
			cached:    keysFor(1, []int{1, 2}, "/g"),
			failed: []string{"https://evil.com/s.xml", "https://example.com/404.xml", "https://example.com/html.xml",
				"https://evil.com/x", "http://127.0.0.1/y", "/relative", "https://example.com/../../etc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for p, b := range tt.files {
				e.setFile(p, b)
			}
			if st := e.warmupStatus(); st.Status != "idle" {
				t.Fatalf("status before = %+v, want idle", st)
			}
			e.startWarmup(tt.sitemap)
			st := e.waitWarmupDone()
			var failed []string
			for _, f := range st.FailedURLs {
				if f.Reason == "" {
					t.Errorf("failed url %s has no reason", f.URL)
				}
				failed = append(failed, f.URL)
			}
			slices.Sort(failed)
			slices.Sort(tt.failed)
			if !slices.Equal(failed, tt.failed) {
				t.Errorf("failed_urls %v, want %v", failed, tt.failed)
			}
			want := warmupStatus{Status: "completed", Total: tt.wantTotal, Processed: tt.wantTotal, Errors: tt.wantErrs, ElapsedSecs: st.ElapsedSecs,
				FailedURLs: st.FailedURLs}
			if !reflect.DeepEqual(st, want) {
				t.Fatalf("status = %+v, want %+v", st, want)
			}
			for _, k := range tt.cached {
				if !e.has(k) {
					t.Errorf("%v not cached after warmup", k)
				}
				if c, _ := e.classes.Load(k); c != prerender.Recache {
					t.Errorf("%v rendered in class %v, want Recache", k, c)
				}
			}
			// What warmup stored is queued for its autorecache.
			perHost := map[int]int{}
			for _, k := range tt.cached {
				perHost[k.HostID]++
			}
			for id, hs := range e.sched.Status().Hosts {
				if hs.Auto.Total != perHost[id] {
					t.Errorf("host %d: %d autorecache entries after warmup, want %d", id, hs.Auto.Total, perHost[id])
				}
			}
			if got := e.refreshes.Load(); got != int64(len(tt.cached)) {
				t.Errorf("Refresh called %d times, want %d", got, len(tt.cached))
			}
			if n := e.noRenderHdr.Load(); n != 0 {
				t.Errorf("%d origin requests lacked X-Prism-Render: 1", n)
			}
		})
	}
}

func TestWarmupStatusShape(t *testing.T) {
	e := newEnv(t)
	_, body := e.do("GET", "/warmup/status", "")
	want := map[string]any{"status": "idle", "total": 0.0, "processed": 0.0, "errors": 0.0, "elapsed_secs": 0.0, "error_message": nil}
	if got := decode(t, body); !reflect.DeepEqual(got, want) {
		t.Fatalf("idle status = %v, want %v", got, want)
	}
	e.setFile("/s.xml", urlset("https://example.com/a"))
	e.startWarmup("https://example.com/s.xml")
	e.waitWarmupDone()
	_, body = e.do("GET", "/warmup/status", "")
	var keys []string
	for k := range decode(t, body) {
		keys = append(keys, k)
	}
	if len(keys) != 6 {
		t.Fatalf("completed status %s has keys %v", body, keys)
	}
}

func TestWarmupFatal(t *testing.T) {
	tests := []struct{ name, sitemap, wantMsg string }{
		{"not found", "https://example.com/missing.xml", "status 404"},
		{"html", "https://example.com/page.html", "neither <urlset> nor <sitemapindex>"},
		{"broken xml", "https://example.com/broken.xml", "sitemap xml"},
		{"redirect off host", "https://example.com/redirect-evil", "not a configured host"},
		{"redirect to loopback", "https://example.com/redirect-loopback", "not a configured host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.setFile("/page.html", []byte("<!DOCTYPE html><html></html>"))
			e.setFile("/broken.xml", []byte("<urlset><url><loc>https://example.com/a</loc></url>"))
			mux := http.NewServeMux()
			mux.HandleFunc("/redirect-evil", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://evil.com/sitemap.xml", http.StatusFound)
			})
			mux.HandleFunc("/redirect-loopback", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, e.origin.URL+"/page.html", http.StatusFound)
			})
			mux.HandleFunc("/", e.serveOrigin)
			e.origin.Config.Handler = mux
			e.startWarmup(tt.sitemap)
			st := e.waitWarmupDone()
			if st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, tt.wantMsg) {
				t.Fatalf("status = %+v, want error_message containing %q", st, tt.wantMsg)
			}
			if e.refreshes.Load() != 0 {
				t.Fatalf("a failed warmup rendered pages")
			}
		})
	}
}

func TestWarmupBadRequest(t *testing.T) {
	e := newEnv(t)
	for _, u := range []string{
		"https://evil.com/sitemap.xml",
		"http://127.0.0.1:1/sitemap.xml",
		"http://169.254.169.254/latest/meta-data",
		"file:///etc/passwd",
		"/sitemap.xml",
		"https://user:pw@example.com/sitemap.xml",
		"",
	} {
		t.Run(u, func(t *testing.T) {
			code, body := e.do("POST", "/warmup", `{"sitemap_url":`+quote(u)+`}`)
			if code != 400 {
				t.Fatalf("POST /warmup %q = %d %s, want 400", u, code, body)
			}
		})
	}
	if st := e.warmupStatus(); st.Status != "idle" {
		t.Fatalf("status after refused warmups = %+v", st)
	}
}

func TestWarmupConflictAndCancel(t *testing.T) {
	e := newEnv(t)
	e.block = make(chan struct{})
	e.setFile("/s.xml", urlset("https://example.com/a", "https://example.com/b"))
	e.startWarmup("https://example.com/s.xml")
	waitFor(t, "first render", func() bool { return e.refreshes.Load() > 0 })

	code, body := e.do("POST", "/warmup", `{"sitemap_url":"https://example.com/s.xml"}`)
	if code != http.StatusConflict {
		t.Fatalf("second POST /warmup = %d %s, want 409", code, body)
	}
	if st := e.warmupStatus(); st.Status != "running" || st.Total != 4 || st.ErrorMessage != nil {
		t.Fatalf("status while running = %+v", st)
	}
	if code, body := e.do("DELETE", "/warmup", ""); code != 200 {
		t.Fatalf("DELETE /warmup = %d %s", code, body)
	}
	st := e.waitWarmupDone()
	if st.ErrorMessage == nil || *st.ErrorMessage != "cancelled" || st.Processed == st.Total {
		t.Fatalf("status after cancel = %+v", st)
	}
	if code, _ := e.do("POST", "/warmup/cancel", ""); code != http.StatusConflict {
		t.Fatalf("cancel after the end = %d, want 409", code)
	}

	// A new warmup may start once the last one finished.
	close(e.block)
	e.startWarmup("https://example.com/s.xml")
	if st := e.waitWarmupDone(); st.Errors != 0 || st.Processed != 4 || st.ErrorMessage != nil {
		t.Fatalf("second warmup = %+v", st)
	}
}

func TestWarmupRetriesNoCapacity(t *testing.T) {
	e := newEnv(t)
	e.noCap.Store(3)
	e.setFile("/s.xml", urlset("https://example.com/a", "https://shop.test/b"))
	e.startWarmup("https://example.com/s.xml")
	st := e.waitWarmupDone()
	if st.Errors != 0 || st.Processed != 3 || st.Total != 3 {
		t.Fatalf("status = %+v, want 3 processed without errors", st)
	}
	if n := e.refreshes.Load(); n != 6 {
		t.Fatalf("Refresh called %d times, want 3 + 3 retries", n)
	}
}

func TestWarmupRenderErrorsCounted(t *testing.T) {
	e := newEnv(t)
	e.failURL = "/bad"
	e.setFile("/s.xml", urlset("https://example.com/bad", "https://example.com/ok"))
	e.startWarmup("https://example.com/s.xml")
	if st := e.waitWarmupDone(); st.Errors != 2 || st.Processed != 4 || st.Total != 4 || st.ErrorMessage != nil {
		t.Fatalf("status = %+v, want 2 errors of 4", st)
	}
}

func TestWarmupLimits(t *testing.T) {
	e := newEnv(t)
	e.srv.limits.maxURLs = 2
	e.srv.limits.maxDepth = 1
	e.setFile("/i.xml", sitemapindex("https://example.com/j.xml", "https://example.com/s.xml"))
	e.setFile("/j.xml", sitemapindex("https://example.com/s.xml")) // depth 2: skipped
	e.setFile("/s.xml", urlset("https://example.com/1", "https://example.com/2", "https://example.com/3"))
	e.startWarmup("https://example.com/i.xml")
	st := e.waitWarmupDone()
	if st.Total != 2*2+1 || st.Errors != 1 {
		t.Fatalf("status = %+v, want 2 URLs x 2 dimensions + 1 skipped child", st)
	}

	e.srv.limits = defaultSitemapLimits
	e.srv.limits.maxBytes = 100
	e.startWarmup("https://example.com/s.xml")
	st = e.waitWarmupDone()
	if st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, "too large") {
		t.Fatalf("status = %+v, want a too-large error", st)
	}
}

func TestRunShutdownCancelsWarmup(t *testing.T) {
	e := newEnv(t)
	e.block = make(chan struct{})
	e.setFile("/s.xml", urlset("https://example.com/a"))
	o := e.srv.opts
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	// Not running yet: warmups are refused.
	rec := postWarmup(srv, "https://example.com/s.xml")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST /warmup before Run = %d, want 503", rec.Code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	waitFor(t, "running", srv.running.Load)
	if rec := postWarmup(srv, "https://example.com/s.xml"); rec.Code != http.StatusAccepted {
		t.Fatalf("POST /warmup = %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "render started", func() bool { return e.refreshes.Load() > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	srv.mu.Lock()
	st := srv.warmup.status(srv.opts.Now())
	srv.mu.Unlock()
	if st.Status != "completed" || st.ErrorMessage == nil || *st.ErrorMessage != "cancelled: shutting down" {
		t.Fatalf("status after shutdown = %+v", st)
	}
}

func postWarmup(srv *Server, u string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest("POST", "/warmup", strings.NewReader(`{"sitemap_url":`+quote(u)+`}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	srv.ServeHTTP(rec, req)
	return rec
}

func TestParseSitemap(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		kind      sitemapKind
		locs      []string
		truncated bool
		wantErr   bool
	}{
		{"urlset", string(urlset("https://a/1", "https://a/2")), urlSet, []string{"https://a/1", "https://a/2"}, false, false},
		{"index", string(sitemapindex("https://a/s.xml")), sitemapIndex, []string{"https://a/s.xml"}, false, false},
		{"no namespace, cdata, entities", `<urlset><url><loc><![CDATA[https://a/x?a=1&b=2]]></loc></url><url><loc>https://a/y?a=1&amp;b=2</loc></url></urlset>`,
			urlSet, []string{"https://a/x?a=1&b=2", "https://a/y?a=1&b=2"}, false, false},
		{"image loc ignored", `<urlset xmlns:image="x"><url><loc>https://a/1</loc><image:image><image:loc>https://a/i.png</image:loc></image:image></url></urlset>`,
			urlSet, []string{"https://a/1"}, false, false},
		{"truncated", string(urlset("https://a/1", "https://a/2", "https://a/3", "https://a/4")), urlSet, []string{"https://a/1", "https://a/2", "https://a/3"}, true, false},
		{"empty", "", 0, nil, false, true},
		{"html", "<html></html>", 0, nil, false, true},
		{"unclosed", "<urlset><url><loc>x", 0, nil, false, true},
		{"two roots", "<urlset></urlset><urlset></urlset>", 0, nil, false, true},
		{"deep", "<urlset>" + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + "</urlset>", 0, nil, false, true},
		{"doctype entity", `<!DOCTYPE urlset [<!ENTITY x SYSTEM "file:///etc/passwd">]><urlset><url><loc>&x;</loc></url></urlset>`, 0, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, locs, trunc, err := parseSitemap(strings.NewReader(tt.doc), 3)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if kind != tt.kind || !reflect.DeepEqual(locs, tt.locs) || trunc != tt.truncated {
				t.Fatalf("got %v %q %v, want %v %q %v", kind, locs, trunc, tt.kind, tt.locs, tt.truncated)
			}
		})
	}
}

func TestStatusJSONRoundTrip(t *testing.T) {
	msg := "x"
	b, _ := json.Marshal(warmupStatus{Status: "completed", ErrorMessage: &msg})
	if !strings.Contains(string(b), `"error_message":"x"`) {
		t.Fatalf("marshal = %s", b)
	}
}

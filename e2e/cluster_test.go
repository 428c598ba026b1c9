package e2e

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prismproxy/prism/internal/redistest"
)

// get is a GET safe to call from any goroutine: it returns what went wrong.
func get(base, path, ua string) (status int, cache, body string, err error) {
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Host = siteHost
	req.Header.Set("User-Agent", ua)
	resp, err := noRedirect.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return 0, "", "", err
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	return resp.StatusCode, resp.Header.Get("X-Prism-Cache"), string(b), err
}

// TestCluster runs three prism processes (one tab each) on one real Redis.
func TestCluster(t *testing.T) {
	if noBrowser != nil {
		t.Skipf("e2e test skipped: %v (install Chromium: apt-get install chromium)", noBrowser)
	}
	root := t // nodes restarted in a subtest live on until the test ends
	redis := redistest.Start(t, "--appendonly", "yes", "--maxmemory-policy", "noeviction")
	o := newOrigin(t)
	var nodes []*Prism
	for i := 1; i <= 3; i++ {
		c := newConf(t, o.URL)
		c.Tabs = 1
		c.Reservation = 0 // one tab: let recaches have it when no crawler does
		c.SchedulerControl = true
		c.Redis, c.NodeID = redis.URL(), fmt.Sprintf("node-%d", i)
		nodes = append(nodes, startPrism(t, c))
	}

	t.Run("one render per page across nodes", func(t *testing.T) {
		for u := range 10 {
			path := fmt.Sprintf("/c/fresh-%d", u)
			var wg sync.WaitGroup
			errs := make(chan error, 30)
			for i := range 30 {
				wg.Go(func() {
					status, _, body, err := get(nodes[i%3].Public, path, desktopBot)
					switch {
					case err != nil:
						errs <- err
					case status != 200 || !strings.Contains(body, "Rendered by JS: "+path):
						errs <- fmt.Errorf("%s on node %d: %d %.200q", path, i%3+1, status, body)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := o.Renders(path); n != 1 {
				t.Fatalf("%s: %d renders for 30 concurrent misses on 3 nodes, want 1", path, n)
			}
		}
	})

	t.Run("rendered on one node is a hit on the others", func(t *testing.T) {
		path := "/c/shared"
		if r := nodes[0].Get(path, desktopBot); r.Status != 200 || r.Header.Get("X-Prism-Cache") != "MISS" {
			t.Fatalf("first request on node 1: %d %s", r.Status, r.Header.Get("X-Prism-Cache"))
		}
		for _, p := range nodes[1:] {
			r := p.Get(path, desktopBot)
			if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "HIT" || !strings.Contains(r.Body, "Rendered by JS: "+path) {
				t.Fatalf("on another node: %d %s %.200q, want a HIT", r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
			}
		}
		if n := o.Renders(path); n != 1 {
			t.Fatalf("%d renders, want 1", n)
		}
	})

	t.Run("glob purge reaches every node, one stopped meanwhile too", func(t *testing.T) {
		// Each render of these pages says which render it was.
		versionedPages(o, "/c/purge/")
		paths := []string{"/c/purge/a", "/c/purge/b"}
		for _, path := range paths {
			for i, p := range nodes {
				if r := p.Get(path, desktopBot); r.Status != 200 || !strings.Contains(r.Body, path+" version 1") {
					t.Fatalf("%s on node %d: %d %.200q, want version 1", path, i+1, r.Status, r.Body)
				}
			}
		}
		// Node 3 stops; node 1 purges; node 3 comes back on its old cache.
		if err, _ := nodes[2].Stop(); err != nil {
			t.Fatalf("stopping node 3: %v", err)
		}
		code, m := nodes[0].admin("POST", "/purge/pattern", `{"pattern":"/c/purge/*"}`, "admin-secret")
		if code != 200 || m["nodes_live"] != float64(2) || m["nodes_applied"] != float64(2) {
			t.Fatalf("/purge/pattern = %d %v, want applied by both live nodes", code, m)
		}
		nodes[2] = startPrism(root, nodes[2].Conf)
		// No node serves the purged render: each answers with a render
		// made after the purge (one node renders, the others share it).
		for _, path := range paths {
			for i, p := range []*Prism{nodes[2], nodes[1], nodes[0]} {
				if r := p.Get(path, desktopBot); r.Status != 200 || !strings.Contains(r.Body, path+" version 2") {
					t.Errorf("node %d after the purge: %d %s %.200q, want version 2", 3-i, r.Status, r.Header.Get("X-Prism-Cache"), r.Body)
				}
			}
		}
	})

	t.Run("kill -9 of the render lock holder", func(_ *testing.T) { clusterHolderKilled(t, o, nodes) })
	t.Run("recache queued on a busy node renders elsewhere", func(_ *testing.T) { clusterRecacheBusy(t, o, nodes) })
	t.Run("recache queued on a node then stopped, cluster-wide pause", func(_ *testing.T) { clusterRecacheStopped(t, o, nodes) })
	t.Run("kill -9 of a node holding a claimed recache", func(_ *testing.T) { clusterClaimKilled(t, o, nodes) })
	t.Run("sitemap warmup started on one node rendered by the cluster", func(_ *testing.T) { clusterWarmup(t, o, nodes) })
	t.Run("SIGSTOP of Redis", func(_ *testing.T) { clusterRedisStopped(t, o, nodes, redis) })
	t.Run("kill -9 of Redis under load", func(_ *testing.T) { clusterRedisKilled(t, o, nodes, redis) })
}

// Each cluster scenario below runs on TestCluster's nodes and reports to
// its t (the nodes were started on it, so a restarted node is too).

// renderLog serves pageJS pages under a prefix and records when each render
// request came; block (when set) holds the render requests it picks until
// the request ends (its browser died) or the test ends.
type renderLog struct {
	mu    sync.Mutex
	times map[string][]time.Time
	block func(path string, n int) bool
	quit  chan struct{}
}

func newRenderLog(t *testing.T, o *Origin, prefix string, block func(path string, n int) bool) *renderLog {
	l := &renderLog{times: map[string][]time.Time{}, block: block, quit: make(chan struct{})}
	t.Cleanup(func() { close(l.quit) })
	o.Mux.HandleFunc(prefix, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Prism-Render") != "" {
			l.mu.Lock()
			l.times[r.URL.Path] = append(l.times[r.URL.Path], time.Now())
			n := len(l.times[r.URL.Path])
			l.mu.Unlock()
			if l.block != nil && l.block(r.URL.Path, n) {
				select {
				case <-r.Context().Done():
				case <-l.quit:
				}
				return
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, pageJS, r.URL.Path)
	})
	return l
}

func (l *renderLog) renders(path string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times[path]...)
}

type answer struct {
	status      int
	cache, body string
	err         error
}

func goGet(base, path, ua string) chan answer {
	ch := make(chan answer, 1)
	go func() {
		s, c, b, err := get(base, path, ua)
		ch <- answer{s, c, b, err}
	}()
	return ch
}

// clusterHolderKilled: node 1 holds a page's render lock, its render hung
// at the origin, node 2 waits for it; node 1 is killed with SIGKILL. Node 2
// takes the lock over and renders within lease (2s) + 1s, and its crawler
// gets the page, not a 5xx.
func clusterHolderKilled(t *testing.T, o *Origin, nodes []*Prism) {
	path := "/c/holder/page"
	l := newRenderLog(t, o, "/c/holder/", func(_ string, n int) bool { return n == 1 })
	goGet(nodes[0].Public, path, desktopBot) // its answer dies with node 1
	waitFor(t, 20*time.Second, "node 1 rendering", func() bool { return len(l.renders(path)) == 1 })
	busy := nodes[1].metric("prism_cluster_lock_busy_total")
	waiting := goGet(nodes[1].Public, path, desktopBot)
	waitFor(t, 10*time.Second, "node 2 waiting for the lock", func() bool {
		return nodes[1].metric("prism_cluster_lock_busy_total") > busy
	})
	killed := time.Now()
	nodes[0].Kill()
	a := <-waiting
	if a.err != nil || a.status != 200 || !strings.Contains(a.body, "Rendered by JS: "+path) {
		t.Errorf("node 2's crawler after the holder died: %d %v %.200q", a.status, a.err, a.body)
	}
	rs := l.renders(path)
	if len(rs) != 2 {
		t.Fatalf("%d renders, want the holder's and one more", len(rs))
	}
	took := rs[1].Sub(killed)
	t.Logf("lock takeover: the page rendered again %v after its holder was killed (lease 2s)", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("rendered again %v after the holder died, want within lease + 1s = 3s", took)
	}
	if n := nodes[1].metric(`prism_cluster_lock_total{result="taken_over"}`); n < 1 {
		t.Errorf("taken_over = %v, want >= 1", n)
	}
	nodes[0] = startPrism(t, nodes[0].Conf)
}

// clusterRecacheBusy: node 1's only tab is busy; a recache queued on node 1
// is rendered by another node meanwhile.
func clusterRecacheBusy(t *testing.T, o *Origin, nodes []*Prism) {
	l := newRenderLog(t, o, "/c/rcbusy/", func(p string, _ int) bool { return p == "/c/rcbusy/hold" })
	held := goGet(nodes[0].Public, "/c/rcbusy/hold", desktopBot)
	waitFor(t, 20*time.Second, "node 1's tab busy", func() bool { return len(l.renders("/c/rcbusy/hold")) == 1 })
	claimed := nodes[1].metric(`prism_recache_shared_total{op="claimed"}`) + nodes[2].metric(`prism_recache_shared_total{op="claimed"}`)
	code, body := nodes[0].api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/c/rcbusy/page"],"dimension_ids":[1],"priority":"high"}`)
	if code != 200 {
		t.Fatalf("recache: %d %v", code, body)
	}
	waitFor(t, 20*time.Second, "another node rendering the recache", func() bool { return len(l.renders("/c/rcbusy/page")) == 1 })
	select {
	case a := <-held:
		t.Fatalf("node 1's held render ended early: %+v", a)
	default:
	}
	if n := nodes[1].metric(`prism_recache_shared_total{op="claimed"}`) + nodes[2].metric(`prism_recache_shared_total{op="claimed"}`); n <= claimed {
		t.Errorf("nodes 2 and 3 claimed nothing (%v before, %v after)", claimed, n)
	}
	// The page is then a hit on every node, node 1 included.
	waitFor(t, 10*time.Second, "the recached page a HIT on node 3", func() bool {
		_, c, _, _ := get(nodes[2].Public, "/c/rcbusy/page", desktopBot)
		return c == "HIT"
	})
	nodes[0].Stop() // ends the held render; restarted below
	nodes[0] = startPrism(t, nodes[0].Conf)
}

// clusterStatus returns node p's internal /status.
func clusterStatus(t *testing.T, p *Prism) map[string]any {
	code, st := p.api("GET", "/status", "")
	if code != 200 {
		t.Fatalf("/status: %d %v", code, st)
	}
	return st
}

// clusterRecacheStopped: a pause on node 1 holds every node; a recache
// queued on node 1 reaches the shared queue (cluster-wide /status shows
// it on node 2); node 1 stops; a resume on node 2 lets node 2 or 3 render it.
func clusterRecacheStopped(t *testing.T, o *Origin, nodes []*Prism) {
	l := newRenderLog(t, o, "/c/rcstop/", nil)
	if code, body := nodes[0].api("POST", "/internal/scheduler/pause", ""); code != 200 {
		t.Fatalf("pause: %d %v", code, body)
	}
	code, body := nodes[0].api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/c/rcstop/a","/c/rcstop/b"],"dimension_ids":[1],"priority":"normal"}`)
	if code != 200 {
		t.Fatalf("recache: %d %v", code, body)
	}
	waitFor(t, 10*time.Second, "node 2's /status to show both in the shared normal queue, paused", func() bool {
		st := clusterStatus(t, nodes[1])
		q := st["queues"].(map[string]any)["1"].(map[string]any)["normal"].(map[string]any)
		c := st["cluster"].(map[string]any)
		return q["total"] == 2.0 && c["paused"] == true && len(c["live_nodes"].([]any)) == 3
	})
	st := clusterStatus(t, nodes[1])
	if tabs := st["rs_capacity"].(map[string]any)["total_free_tabs"]; tabs != 3.0 {
		t.Errorf("cluster-wide total_free_tabs = %v, want 3 (one per node)", tabs)
	}
	nodes[0].Stop()
	if n := len(l.renders("/c/rcstop/a")) + len(l.renders("/c/rcstop/b")); n != 0 {
		t.Fatalf("%d renders while paused", n)
	}
	if code, body := nodes[1].api("POST", "/internal/scheduler/resume", ""); code != 200 {
		t.Fatalf("resume: %d %v", code, body)
	}
	waitFor(t, 20*time.Second, "both rendered by the running nodes", func() bool {
		return len(l.renders("/c/rcstop/a")) == 1 && len(l.renders("/c/rcstop/b")) == 1
	})
	nodes[0] = startPrism(t, nodes[0].Conf)
	// Node 1 comes back resumed: the cluster's state, not its own file.
	waitFor(t, 10*time.Second, "node 1 resumed", func() bool {
		return clusterStatus(t, nodes[0])["cluster"].(map[string]any)["paused"] == false
	})
}

// clusterClaimKilled: the node rendering a claimed recache is killed with
// SIGKILL; the claim's lease (3s) lapses and another node renders it.
func clusterClaimKilled(t *testing.T, o *Origin, nodes []*Prism) {
	path := "/c/claim/page"
	l := newRenderLog(t, o, "/c/claim/", func(_ string, n int) bool { return n == 1 })
	var before []float64
	for _, p := range nodes {
		before = append(before, p.metric(`prism_recache_shared_total{op="claimed"}`))
	}
	code, body := nodes[0].api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["`+path+`"],"dimension_ids":[1],"priority":"high"}`)
	if code != 200 {
		t.Fatalf("recache: %d %v", code, body)
	}
	waitFor(t, 20*time.Second, "a node rendering the claimed recache", func() bool { return len(l.renders(path)) == 1 })
	holder := -1
	for i, p := range nodes {
		if p.metric(`prism_recache_shared_total{op="claimed"}`) > before[i] {
			holder = i
		}
	}
	if holder < 0 {
		t.Fatal("no node claimed the recache")
	}
	nodes[holder].Kill()
	waitFor(t, 30*time.Second, "another node rendering it after the claim lapsed", func() bool { return len(l.renders(path)) == 2 })
	waitFor(t, 10*time.Second, "the shared queue empty, no claim left", func() bool {
		st := clusterStatus(t, nodes[(holder+1)%3])
		q := st["queues"].(map[string]any)["1"].(map[string]any)["high"].(map[string]any)
		return q["total"] == 0.0 && st["cluster"].(map[string]any)["claimed"] == 0.0
	})
	nodes[holder] = startPrism(t, nodes[holder].Conf)
}

// clusterRedisStopped: Redis is SIGSTOPped for 10s. Hits are unaffected;
// misses render locally, each waiting at most a call timeout for Redis, so
// they are answered while Redis is still stopped.
func clusterRedisStopped(t *testing.T, o *Origin, nodes []*Prism, redis *redistest.Server) {
	for i, p := range nodes {
		if a := p.Get("/c/stop/hit", desktopBot); a.Status != 200 {
			t.Fatalf("warming node %d: %d", i+1, a.Status)
		}
	}
	redis.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	cont := sync.OnceFunc(func() { redis.Signal(syscall.SIGCONT) })
	defer cont()
	var maxHit, maxMiss time.Duration
	misses := 0
	for i := 0; time.Since(stopped) < 10*time.Second; i++ {
		p := nodes[i%3]
		began := time.Now()
		s, c, _, err := get(p.Public, "/c/stop/hit", desktopBot)
		maxHit = max(maxHit, time.Since(began))
		if err != nil || s != 200 || c != "HIT" {
			t.Errorf("hit on node %d with Redis stopped: %d %s %v", i%3+1, s, c, err)
		}
		if i%5 == 0 {
			path := fmt.Sprintf("/c/stop/miss-%d", i)
			began = time.Now()
			s, _, body, err := get(p.Public, path, desktopBot)
			maxMiss = max(maxMiss, time.Since(began))
			if err != nil || s != 200 || !strings.Contains(body, "Rendered by JS: "+path) {
				t.Errorf("miss on node %d with Redis stopped: %d %v %.200q", i%3+1, s, err, body)
			}
			if time.Since(stopped) < 10*time.Second {
				misses++
			}
		}
	}
	cont()
	t.Logf("Redis stopped 10s: slowest hit %v, slowest miss %v (call_timeout 250ms), %d misses answered meanwhile",
		maxHit.Round(time.Millisecond), maxMiss.Round(time.Millisecond), misses)
	if misses < 3 {
		t.Errorf("only %d misses answered while Redis was stopped: they waited for Redis", misses)
	}
	// The cluster works again: a page rendered on node 1 is a hit on node 2.
	waitFor(t, 20*time.Second, "a render shared again after SIGCONT", func() bool {
		path := fmt.Sprintf("/c/stop/after-%d", time.Now().UnixNano())
		get(nodes[0].Public, path, desktopBot)
		_, c, _, _ := get(nodes[1].Public, path, desktopBot)
		return c == "HIT"
	})
}

// clusterRedisKilled: Redis is killed with SIGKILL under mixed crawler
// load. No answer is a 5xx, hits keep coming from the nodes' tiers, misses
// render; a purge (answered 202, pending) and a recache made on node 1
// meanwhile reach the cluster once Redis is back.
func clusterRedisKilled(t *testing.T, o *Origin, nodes []*Prism, redis *redistest.Server) {
	var mu sync.Mutex // guards the load's counters
	version := versionedPages(o, "/c/kill/")
	hits := []string{"/c/kill/purged", "/c/kill/hit-1", "/c/kill/hit-2"}
	for _, path := range hits {
		for i, p := range nodes {
			if a := p.Get(path, desktopBot); a.Status != 200 || !strings.Contains(a.Body, "version 1") {
				t.Fatalf("warming %s on node %d: %d %.100q", path, i+1, a.Status, a.Body)
			}
		}
	}
	var stop sync.WaitGroup
	var quit = make(chan struct{})
	var bad []string
	served, missesDown := 0, 0
	var down bool
	for w := range 3 {
		stop.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				path := hits[1+i%2]
				if i%4 == 3 {
					path = fmt.Sprintf("/c/kill/miss-%d-%d", w, i)
				}
				s, c, body, err := get(nodes[w].Public, path, desktopBot)
				mu.Lock()
				served++
				switch {
				case err != nil || s != 200:
					bad = append(bad, fmt.Sprintf("%s on node %d: %d %v", path, w+1, s, err))
				case i%4 != 3 && c != "HIT":
					bad = append(bad, fmt.Sprintf("%s on node %d: %s, want a HIT from its own tiers", path, w+1, c))
				case i%4 == 3 && !strings.Contains(body, path+" version 1"):
					bad = append(bad, fmt.Sprintf("%s on node %d: %.100q", path, w+1, body))
				case i%4 == 3 && down:
					missesDown++
				}
				mu.Unlock()
			}
		})
	}
	redis.Kill()
	mu.Lock()
	down = true
	mu.Unlock()
	code, m := nodes[0].admin("POST", "/purge/url", `{"url":"/c/kill/purged"}`, "admin-secret")
	if code != 202 || m["pending"] != true {
		t.Errorf("purge with Redis down = %d %v, want 202 pending", code, m)
	}
	code, body := nodes[0].api("POST", "/internal/cache/recache", `{"host_id":1,"urls":["/c/kill/recached"],"dimension_ids":[1],"priority":"high"}`)
	if code != 200 {
		t.Errorf("recache with Redis down: %d %v", code, body)
	}
	waitFor(t, 30*time.Second, "misses rendered while Redis is down", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return missesDown >= 6
	})
	close(quit)
	stop.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d answers under load with Redis killed were wrong: %v", len(bad), served, bad[:min(len(bad), 10)])
	}
	redis.Restart()
	// The purge reaches nodes 2 and 3: neither serves version 1 any more.
	for i, p := range nodes[1:] {
		waitFor(t, 20*time.Second, fmt.Sprintf("node %d to drop the page purged while Redis was down", i+2), func() bool {
			_, _, body, err := get(p.Public, "/c/kill/purged", desktopBot)
			return err == nil && !strings.Contains(body, "version 1")
		})
	}
	waitFor(t, 30*time.Second, "the recache made while Redis was down rendered", func() bool {
		return version("/c/kill/recached") >= 1
	})
	waitFor(t, 20*time.Second, "every node back in the cluster", func() bool {
		c := clusterStatus(t, nodes[2])["cluster"].(map[string]any)
		return c["redis_reachable"] == true && len(c["live_nodes"].([]any)) == 3
	})
}

// clusterWarmup: a sitemap warmup started on node 1 is rendered by every
// node's free tabs, each page once per dimension; node 1's /warmup/status follows it to
// the end, and every node serves the pages as hits.
func clusterWarmup(t *testing.T, o *Origin, nodes []*Prism) {
	l := newRenderLog(t, o, "/c/warm/", nil)
	var paths []string
	var sm strings.Builder
	sm.WriteString(`<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">`)
	for i := range 8 {
		p := fmt.Sprintf("/c/warm/p-%d", i)
		paths = append(paths, p)
		fmt.Fprintf(&sm, "<url><loc>https://%s%s</loc></url>", siteHost, p)
	}
	sm.WriteString("</urlset>")
	o.Mux.HandleFunc("/c/sitemap.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprint(w, sm.String())
	})
	var before []float64
	for _, p := range nodes {
		before = append(before, p.metric(`prism_recache_shared_total{op="claimed"}`))
	}
	code, m := nodes[0].admin("POST", "/warmup", `{"sitemap_url":"https://`+siteHost+`/c/sitemap.xml"}`, "admin-secret")
	if code != http.StatusAccepted {
		t.Fatalf("/warmup = %d %v", code, m)
	}
	st := nodes[0].waitWarmup(60*time.Second, "admin-secret")
	if st["total"] != 16.0 || st["processed"] != 16.0 || st["errors"] != 0.0 { // 8 URLs, 2 dimensions
		t.Fatalf("warmup status on node 1 = %v, want 16/16 without errors", st)
	}
	elsewhere := 0.0
	for i, p := range nodes[1:] {
		elsewhere += p.metric(`prism_recache_shared_total{op="claimed"}`) - before[i+1]
	}
	if elsewhere < 1 {
		t.Errorf("nodes 2 and 3 rendered none of the warmup")
	}
	for _, path := range paths {
		if n := len(l.renders(path)); n != 2 {
			t.Errorf("%s rendered %d times, want once per dimension", path, n)
		}
		for i, p := range nodes {
			for _, ua := range []string{desktopBot, mobileBot} {
				if _, c, _, err := get(p.Public, path, ua); err != nil || c != "HIT" {
					t.Errorf("%s on node %d after the warmup: %s %v, want HIT", path, i+1, c, err)
				}
			}
		}
	}
}

// versionedPages serves pages under prefix that say which render of them
// they are ("<path> version N", 0 for a fetch that is not a render), and
// returns how many renders of a path the origin has seen.
func versionedPages(o *Origin, prefix string) func(path string) int {
	var mu sync.Mutex
	version := map[string]int{}
	o.Mux.HandleFunc(prefix, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Header.Get("X-Prism-Render") != "" {
			version[r.URL.Path]++
		}
		v := version[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!DOCTYPE html><html><body><p>%s version %d</p></body></html>", r.URL.Path, v)
	})
	return func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return version[path]
	}
}

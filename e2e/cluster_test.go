package e2e

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startRedis runs a real redis-server on a free loopback port in a temp dir
// until the test ends, and returns its URL.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("cluster e2e test skipped: redis-server not found (install it: apt-get install redis-server, or make test)")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--dir", t.TempDir(),
		"--appendonly", "yes", "--save", "", "--daemonize", "no", "--maxmemory-policy", "noeviction")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	waitFor(t, 10*time.Second, "redis-server answering PING", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprint(c, "PING\r\n")
		c.SetReadDeadline(time.Now().Add(time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "+PONG")
	})
	return "redis://" + addr + "/0"
}

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
	redisURL := startRedis(t)
	o := newOrigin(t)
	var nodes []*Prism
	for i := 1; i <= 3; i++ {
		c := newConf(t, o.URL)
		c.Tabs = 1
		c.Redis, c.NodeID = redisURL, fmt.Sprintf("node-%d", i)
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
		var mu sync.Mutex
		version := map[string]int{}
		o.Mux.HandleFunc("/c/purge/", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if r.Header.Get("X-Prism-Render") != "" {
				version[r.URL.Path]++
			}
			v := version[r.URL.Path]
			mu.Unlock()
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<!DOCTYPE html><html><body><p>%s version %d</p></body></html>", r.URL.Path, v)
		})
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
		nodes[2] = startPrism(t, nodes[2].Conf)
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
}

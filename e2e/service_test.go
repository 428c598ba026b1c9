package e2e

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bingbot = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"

// nodeDeps returns the directory holding the npm packages the service
// tests run (scripts/ensure-node-deps.sh installs them when missing); the
// test skips when node or npm is missing or the packages cannot be had.
func nodeDeps(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("service e2e test skipped: %s not found (apt-get install nodejs npm)", tool)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command("../scripts/ensure-node-deps.sh")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("service e2e test skipped: npm packages unavailable (scripts/ensure-node-deps.sh: %v)\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// startNodeApp runs testdata/service/<script> under node with the npm
// packages of deps and env, and returns its base URL; it is killed when the
// test ends.
func startNodeApp(t *testing.T, deps, script string, env ...string) string {
	t.Helper()
	cmd := exec.Command("node", filepath.Join("testdata", "service", script))
	cmd.Env = append(os.Environ(), append([]string{"NODE_PATH=" + filepath.Join(deps, "node_modules")}, env...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, stderr.String())
		}
	})
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				port <- p
			}
		}
		close(port)
	}()
	select {
	case p, ok := <-port:
		if !ok {
			t.Fatalf("node %s exited before listening:\n%s", script, stderr.String())
		}
		return "http://127.0.0.1:" + p
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not listen within 30s:\n%s", script, stderr.String())
	}
	return ""
}

// TestServiceMiddlewares runs the real npm middlewares, prerender-node and
// rendertron-middleware, in front of a test origin, pointed at PRISM's
// render-service port, the migration the README describes: one URL
// changed.
func TestServiceMiddlewares(t *testing.T) {
	o := newOrigin(t)
	c := newConf(t, o.URL)
	c.ServiceOn = true
	c.ServiceExtra = `tokens = ["svc-token"]`
	p := startPrism(t, c)
	deps := nodeDeps(t)
	env := []string{"PRISM_SERVICE_URL=" + p.ServiceURL, "ORIGIN=" + o.URL}

	t.Run("prerender-node", func(t *testing.T) {
		app := startNodeApp(t, deps, "prerender-app.js", append(env, "PRERENDER_TOKEN=svc-token")...)
		r := do(t, http.MethodGet, app+"/products/x?y=1", desktopBot, nil)
		if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "MISS" || r.Header.Get("X-Prism-Dimension") != "desktop" {
			t.Fatalf("crawler through prerender-node: %d cache %q dim %q\n%.500s", r.Status,
				r.Header.Get("X-Prism-Cache"), r.Header.Get("X-Prism-Dimension"), r.Body)
		}
		contains(t, "prerender-node page", r.Body, "Rendered by JS: /products/x")
		r = do(t, http.MethodGet, app+"/products/x?y=1", desktopBot, nil)
		if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "HIT" {
			t.Fatalf("second request: %d cache %q, want a HIT", r.Status, r.Header.Get("X-Prism-Cache"))
		}
		if n := o.Renders("/products/x"); n != 1 {
			t.Fatalf("origin saw %d renders of /products/x, want 1", n)
		}
		// The crawler's User-Agent reaches PRISM and picks the dimension.
		if r = do(t, http.MethodGet, app+"/products/x?y=1", mobileBot, nil); r.Header.Get("X-Prism-Dimension") != "mobile" {
			t.Fatalf("mobile crawler: dimension %q", r.Header.Get("X-Prism-Dimension"))
		}
		// 404 pages stay 404: the origin's status, and a meta tag's.
		r = do(t, http.MethodGet, app+"/missing", desktopBot, nil)
		if r.Status != 404 {
			t.Fatalf("/missing: %d, want 404", r.Status)
		}
		contains(t, "/missing", r.Body, "Rendered by JS: missing page")
		r = do(t, http.MethodGet, app+"/meta404", desktopBot, nil)
		if r.Status != 404 {
			t.Fatalf("/meta404: %d, want 404", r.Status)
		}
		contains(t, "/meta404", r.Body, "product not found")
		// Redirects come back as redirects, not followed.
		r = do(t, http.MethodGet, app+"/moved", desktopBot, nil)
		if r.Status != 301 || !strings.HasSuffix(r.Header.Get("Location"), "/new-home") {
			t.Fatalf("/moved: %d Location %q, want 301 to /new-home", r.Status, r.Header.Get("Location"))
		}
		// People get the origin's own page.
		r = do(t, http.MethodGet, app+"/products/x?y=1", person, nil)
		if r.Header.Get("X-Prism-Cache") != "" || !strings.Contains(r.Body, "Loading") {
			t.Fatalf("person: cache %q body %.200q", r.Header.Get("X-Prism-Cache"), r.Body)
		}
		// A site on a host PRISM does not front is refused, not fetched.
		r = do(t, http.MethodGet, app+"/x", desktopBot, nil, "Host: evil.test")
		if r.Status != 400 || !strings.Contains(r.Body, "not on a configured host") {
			t.Fatalf("unconfigured host: %d %.200q", r.Status, r.Body)
		}
	})

	t.Run("rendertron-middleware", func(t *testing.T) {
		app := startNodeApp(t, deps, "rendertron-app.js", env...)
		r := do(t, http.MethodGet, app+"/rt/page?a=1", bingbot, nil)
		// rendertron-middleware forwards no User-Agent: the default dimension.
		if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "MISS" || r.Header.Get("X-Prism-Dimension") != "desktop" {
			t.Fatalf("crawler through rendertron-middleware: %d cache %q dim %q\n%.500s", r.Status,
				r.Header.Get("X-Prism-Cache"), r.Header.Get("X-Prism-Dimension"), r.Body)
		}
		contains(t, "rendertron page", r.Body, "Rendered by JS: /rt/page")
		r = do(t, http.MethodGet, app+"/rt/page?a=1", bingbot, nil)
		if r.Status != 200 || r.Header.Get("X-Prism-Cache") != "HIT" {
			t.Fatalf("second request: %d cache %q, want a HIT", r.Status, r.Header.Get("X-Prism-Cache"))
		}
		if n := o.Renders("/rt/page"); n != 1 {
			t.Fatalf("origin saw %d renders of /rt/page, want 1", n)
		}
		if r = do(t, http.MethodGet, app+"/missing", bingbot, nil); r.Status != 404 {
			t.Fatalf("/missing through rendertron-middleware: %d, want 404", r.Status)
		}
		r = do(t, http.MethodGet, app+"/x", bingbot, nil, "Host: evil.test")
		if r.Status != 400 || !strings.Contains(r.Body, "not on a configured host") {
			t.Fatalf("unconfigured host: %d %.200q", r.Status, r.Body)
		}
		if r = do(t, http.MethodGet, app+"/rt/page?a=1", person, nil); !strings.Contains(r.Body, "Loading") {
			t.Fatalf("person: %.200q", r.Body)
		}
	})

	// The port itself: tokens, relative paths and other hosts.
	for _, tc := range []struct {
		uri, token string
		status     int
	}{
		{"/https://site.test/products/x?y=1", "", 401},
		{"/https://site.test/products/x?y=1", "wrong", 401},
		{"/https:/site.test/products/x?y=1", "svc-token", 200},
		{"/products/x?y=1", "svc-token", 400},
		{"/https://evil.test/x", "svc-token", 400},
		{"/http://127.0.0.1:1/x", "svc-token", 400},
	} {
		var hdr []string
		if tc.token != "" {
			hdr = append(hdr, "X-Prerender-Token: "+tc.token)
		}
		r := do(t, http.MethodGet, p.ServiceURL+tc.uri, desktopBot, nil, hdr...)
		if r.Status != tc.status {
			t.Errorf("%s (token %q): %d, want %d: %.200s", tc.uri, tc.token, r.Status, tc.status, r.Body)
		}
	}
	if r := do(t, http.MethodGet, p.ServiceURL+"/_ah/health", "", nil); r.Status != 200 {
		t.Errorf("/_ah/health: %d", r.Status)
	}
}

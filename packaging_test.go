package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSystemdUnit checks packaging/prism.service with systemd-analyze
// verify (any warning fails), with the binary path pointed at a file that
// exists here, and the directives the unit promises.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("packaging/prism.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nKillMode=control-group\n", "\nUser=prism\n", "\nNoNewPrivileges=yes\n",
		"\nExecStart=/usr/local/bin/prism serve -config /etc/prism/prism.toml\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	// Chromium's JIT and sandbox break under these.
	for _, bad := range []string{"MemoryDenyWriteExecute=yes", "RestrictNamespaces=yes", "PrivateUsers=yes"} {
		if bytes.Contains(unit, []byte("\n"+bad)) {
			t.Errorf("unit sets %s, which breaks Chromium", bad)
		}
	}
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit was not verified")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "prism.service")
	writeFile(t, path, strings.ReplaceAll(string(unit), "/usr/local/bin/prism", self))
	var out bytes.Buffer
	cmd := exec.Command(tool, "verify", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// Messages about other units on this machine are not the unit's.
	var own []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, path) || strings.Contains(l, "prism.service") {
			own = append(own, l)
		}
	}
	if err != nil || len(own) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}

// TestDockerfile checks what the Dockerfile promises. No container daemon
// runs here, so the image is not built: this reads it.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, re := range []string{
		`(?m)^FROM golang:\S+ AS build$`,
		`(?m)^FROM debian:\S+$`,
		`apt-get install -y --no-install-recommends chromium tini `,
		`rm -rf /var/lib/apt/lists/\*`,
		`(?m)^ARG VERSION=`,
		`-X main\.version=\$\{VERSION\}`,
		`(?m)^COPY --from=build /out/prism /usr/local/bin/prism$`,
		`(?m)^USER prism$`,
		`(?m)^VOLUME \["/var/lib/prism/data"\]$`,
		`(?m)^WORKDIR /var/lib/prism$`,
		`HEALTHCHECK .*\n?.*http://127\.0\.0\.1:4001/health`,
		`(?m)^ENTRYPOINT \["/usr/bin/tini", "--", "/usr/local/bin/prism"\]$`,
		`(?m)^CMD \["serve", "-config", "/etc/prism/prism.toml"\]$`,
	} {
		if !regexp.MustCompile(re).MatchString(df) {
			t.Errorf("Dockerfile does not match %s", re)
		}
	}
	// The user is made before USER names it, and nothing runs as root after.
	if u, us := strings.Index(df, "useradd"), strings.Index(df, "USER prism"); u < 0 || u > us {
		t.Errorf("useradd must come before USER prism")
	}
	// The config the image's CMD starts with is valid.
	if code, _, stderr, _ := runTestCommand(t, "check", "-config", "prism.example.toml"); code != exitOK {
		t.Errorf("prism.example.toml, the image's config: %s", stderr)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// echoService stands in for PRISM's render-service port: it answers with
// the request target and the headers it got.
func echoService(t *testing.T) (*httptest.Server, int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "TARGET %s\nTOKEN %s\nUA %s\nRENDER %s\n", r.RequestURI, r.Header.Get("X-Prerender-Token"),
			r.UserAgent(), r.Header.Get("X-Prism-Render"))
	}))
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).Port
}

// checkServiceRecipe sends a crawler, a person, a static file and PRISM's
// own browser through a web server running a render-service example, and
// checks that only the crawler's page request reaches the service, with
// the page's absolute URL (query intact), the token and the crawler's UA.
func checkServiceRecipe(t *testing.T, base, host, token string) {
	t.Helper()
	get := func(path, ua string, hdr ...string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Host = host
		req.Header.Set("User-Agent", ua)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	const bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	got := get("/products/x%20y?a=1&b=%2F2", bot)
	want := "TARGET /http://" + strings.Split(host, ":")[0] + "/products/x%20y?a=1&b=%2F2\nTOKEN " + token + "\nUA " + bot + "\n"
	if !strings.HasPrefix(got, want) {
		t.Errorf("crawler: the service got\n%s\nwant\n%s", got, want)
	}
	for _, c := range []struct {
		name, path, ua string
		hdr            []string
	}{
		{"person", "/products/x", "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0", nil},
		{"static file", "/app.js", bot, nil},
		{"PRISM's browser", "/products/x", bot, []string{"X-Prism-Render", "1"}},
		{"curl", "/products/x", "curl/8.5.0", nil},
	} {
		if got := get(c.path, c.ua, c.hdr...); strings.Contains(got, "TARGET") || !strings.Contains(got, "<html>app</html>") {
			t.Errorf("%s: got %q, want the app's own page", c.name, got)
		}
	}
}

// TestNginxExamples checks both nginx examples with nginx -t, and runs the
// render-service one (on free ports, TLS off) in front of a stand-in for
// the service port.
func TestNginxExamples(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if nginx, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Skip("nginx not installed (apt-get install nginx-light): the examples were not checked")
		}
	}
	if _, err := os.Stat("/etc/ssl/private/ssl-cert-snakeoil.key"); err != nil {
		t.Skip("the examples' certificate (Debian's ssl-cert snakeoil) is missing")
	}
	for _, f := range []string{"examples/nginx.conf", "examples/nginx-render-service.conf"} {
		abs, _ := filepath.Abs(f)
		if out, err := exec.Command(nginx, "-e", "stderr", "-t", "-c", abs).CombinedOutput(); err != nil {
			t.Errorf("nginx -t %s: %v\n%s", f, err, out)
		}
	}

	dir := t.TempDir()
	r := newRecipe(t, dir)
	conf := r.conf(t, "examples/nginx-render-service.conf", [][2]string{
		{"listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d;", r.pub)},
		{"listen [::]:443 ssl;", ""},
		{"127.0.0.1:4002", fmt.Sprintf("127.0.0.1:%d", r.svc)},
		{"listen 127.0.0.1:8080;", fmt.Sprintf("listen 127.0.0.1:%d;", r.orig)},
		{"/srv/www", r.www},
		{"pid /tmp/nginx-prism-service-example.pid;", "pid " + filepath.Join(dir, "nginx.pid") + ";"},
	})
	path := filepath.Join(dir, "nginx.conf")
	writeFile(t, path, conf)
	cmd := exec.Command(nginx, "-e", "stderr", "-p", dir, "-c", path,
		"-g", "daemon off; master_process off; error_log stderr;")
	logs := logFile(t, dir, "nginx.log")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", r.pub), logs)
	checkServiceRecipe(t, fmt.Sprintf("http://127.0.0.1:%d", r.pub), "example.com", "CHANGE-ME")
}

// TestCaddyExamples validates both Caddyfiles, and runs the render-service
// one (plain HTTP on free ports) in front of a stand-in for the service port.
func TestCaddyExamples(t *testing.T) {
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		t.Skip("caddy not installed (apt-get install caddy): the examples were not checked")
	}
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "PRISM_SERVICE_TOKEN=tok-123")
	for _, f := range []string{"examples/Caddyfile", "examples/Caddyfile.render-service"} {
		cmd := exec.Command(caddy, "validate", "--config", f, "--adapter", "caddyfile")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("caddy validate %s: %v\n%s", f, err, out)
		}
	}

	r := newRecipe(t, dir)
	conf := r.conf(t, "examples/Caddyfile.render-service", [][2]string{
		{"\nexample.com {\n", fmt.Sprintf("\n{\n\tadmin off\n}\n\nhttp://example.com:%d {\n\tbind 127.0.0.1\n", r.pub)},
		{"127.0.0.1:4002", fmt.Sprintf("127.0.0.1:%d", r.svc)},
		{"http://example.com:8080 {", fmt.Sprintf("http://example.com:%d {", r.orig)},
		{"/srv/www", r.www},
	})
	// A global options block must come first.
	i := strings.Index(conf, "\n{\n\tadmin off\n}\n")
	conf = "{\n\tadmin off\n}\n" + conf[:i] + conf[i+len("\n{\n\tadmin off\n}\n"):]
	path := filepath.Join(dir, "Caddyfile")
	writeFile(t, path, conf)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, caddy, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	logs := logFile(t, dir, "caddy.log")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", r.pub), logs)
	checkServiceRecipe(t, fmt.Sprintf("http://127.0.0.1:%d", r.pub), fmt.Sprintf("example.com:%d", r.pub), "tok-123")
}

// recipe is what a render-service example runs with in a test: the app's
// files, a stand-in service port, and free ports for the public and origin
// servers.
type recipe struct {
	www            string
	svc, pub, orig int
}

func newRecipe(t *testing.T, dir string) *recipe {
	t.Helper()
	r := &recipe{www: filepath.Join(dir, "www"), pub: freePort(t), orig: freePort(t)}
	if err := os.Mkdir(r.www, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(r.www, "index.html"), "<html>app</html>")
	_, r.svc = echoService(t)
	return r
}

// conf returns example file with each replacement made; a text that is no
// longer in the file fails the test.
func (r *recipe) conf(t *testing.T, file string, repl [][2]string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, rp := range repl {
		if !strings.Contains(conf, rp[0]) {
			t.Fatalf("%s changed: %q not found; update this test", file, rp[0])
		}
		conf = strings.ReplaceAll(conf, rp[0], rp[1])
	}
	return conf
}

// logFile creates a file for a child process's output.
func logFile(t *testing.T, dir, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// waitListening polls addr until it accepts a connection; on failure it
// shows the server's log.
func waitListening(t *testing.T, addr string, logs *os.File) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logs.Name())
			t.Fatalf("%s not listening: %v\n%s", addr, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

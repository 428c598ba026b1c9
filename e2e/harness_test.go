// Package e2e runs the built prism binary against real Chromium and a real
// test origin. The binary is built once (TestMain); each test starts the
// instances it needs on free ports in its own temp dir and stops them.
package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/prismproxy/prism/prerender"
)

// prismBin is the binary under test, built once by TestMain.
var prismBin string

// noBrowser says why the tests skip: no browser PRISM could launch (found
// as PRISM finds it), or PRISM_TEST_CHROME=none.
var noBrowser error

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("PRISM_TEST_CHROME") == "none" {
		noBrowser = errors.New("PRISM_TEST_CHROME=none")
	} else if _, err := prerender.FindChrome(os.Getenv("PRISM_TEST_CHROME")); err != nil {
		noBrowser = err
	}
	if noBrowser != nil {
		return m.Run() // every test skips in startPrism
	}
	dir, err := os.MkdirTemp("", "prism-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	prismBin = filepath.Join(dir, "prism")
	build := exec.Command("go", "build", "-o", prismBin, ".")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building prism:", err)
		return 1
	}
	return m.Run()
}

// Bot and person user agents used across the tests.
const (
	desktopBot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	mobileBot  = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	person     = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	// siteHost is the public name of the test site; requests carry it as Host.
	siteHost = "site.test"
)

// Conf holds the knobs tests turn in the generated prism.toml.
type Conf struct {
	Dir                     string // instance dir: cache, journal, logs; reuse it to restart
	Origin                  string // origin base URL
	Tabs                    int
	Timeout                 string
	TTL                     string
	StaleTTL                string
	RecacheInterval         string
	AdminToken              string
	AuthKey                 string
	SchedulerControl        bool
	Extra                   string // TOML appended to the config (more [[hosts]], say)
	RenderExtra             string // TOML added to [render]
	TrustedProxies          string // server.trusted_proxies, a TOML array ("" for none)
	Redis, NodeID           string // [cluster]: on when Redis is set
	Reservation             int    // render.online_reservation_percent
	MaxAttempts             int    // recache.max_attempts; 0: the default
	Listen, Admin, Internal string // filled by start
	// ServiceOn adds a [service] section (the render-service port) with
	// ServiceExtra (TOML: tokens, allow_from, ...); Service is its
	// address, filled by start.
	ServiceOn    bool
	ServiceExtra string
	Service      string
}

const confTemplate = `
[server]
listen = "{{.Listen}}"
read_header_timeout = "2s"
{{if .TrustedProxies}}trusted_proxies = {{.TrustedProxies}}{{end}}

[admin]
address = "{{.Admin}}"
bearer_token = "{{.AdminToken}}"

[internal]
address = "{{.Internal}}"
auth_key = "{{.AuthKey}}"
scheduler_control_api = {{.SchedulerControl}}
daemon_id = "prism-e2e"

[render]
tabs = {{.Tabs}}
user_data_dir = "{{.Dir}}/chrome"
timeout = "{{.Timeout}}"
online_reservation_percent = {{.Reservation}}
{{.RenderExtra}}

[cache]
dir = "{{.Dir}}/cache"
memory_mb = 64
ttl = "{{.TTL}}"
stale_ttl = "{{.StaleTTL}}"

[recache]
interval = "{{.RecacheInterval}}"
{{if .MaxAttempts}}max_attempts = {{.MaxAttempts}}{{end}}
{{if .Redis}}
[cluster]
redis = "{{.Redis}}"
node_id = "{{.NodeID}}"
lock_lease = "2s"
purge_wait = "10s"
claim_lease = "3s"
{{end}}
{{if .Service}}
[service]
address = "{{.Service}}"
{{.ServiceExtra}}
{{end}}
[[hosts]]
id = 1
name = "` + siteHost + `"
aliases = ["www.` + siteHost + `"]
origin = "{{.Origin}}"

  [[hosts.dimensions]]
  id = 2
  name = "mobile"
  match_ua = ["re:android.*googlebot"]
  width = 412
  height = 915
  mobile = true

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["Googlebot", "bingbot"]
  width = 1366
  height = 768

{{.Extra}}
`

// Prism is one running prism process.
type Prism struct {
	t    *testing.T
	Conf Conf
	cmd  *exec.Cmd
	done chan error
	log  *os.File
	// ended is set by Stop or Kill (the test's goroutine only): the process
	// is gone, and done has been read.
	ended bool
	// Public, AdminURL and InternalURL are base URLs ("http://127.0.0.1:port").
	Public, AdminURL, InternalURL string
	ServiceURL                    string // the render-service port, when Conf.ServiceOn
}

// newConf returns the default configuration for an instance in a fresh dir.
func newConf(t *testing.T, origin string) Conf {
	return Conf{
		Dir:             t.TempDir(),
		Origin:          origin,
		Tabs:            2,
		Timeout:         "10s",
		TTL:             "1h",
		StaleTTL:        "72h",
		RecacheInterval: "12h",
		AdminToken:      "admin-secret",
		AuthKey:         "internal-secret",
		Reservation:     50,
	}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startPrism writes c's config and runs prism until it is healthy. The
// process is stopped (SIGTERM) when the test ends, if still running. A
// port taken between freeAddr and prism's listen (another test's browser
// or server) is retried with fresh ports.
func startPrism(t *testing.T, c Conf) *Prism {
	t.Helper()
	if noBrowser != nil {
		t.Skipf("e2e test skipped: %v (install Chromium: apt-get install chromium)", noBrowser)
	}
	for attempt := 1; ; attempt++ {
		p, err := tryStartPrism(t, c)
		if err == nil {
			return p
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func tryStartPrism(t *testing.T, c Conf) (*Prism, error) {
	t.Helper()
	c.Listen, c.Admin, c.Internal = freeAddr(t), freeAddr(t), freeAddr(t)
	if c.ServiceOn {
		c.Service = freeAddr(t)
	}
	var buf bytes.Buffer
	if err := template.Must(template.New("conf").Parse(confTemplate)).Execute(&buf, c); err != nil {
		t.Fatalf("config template: %v", err)
	}
	cfgPath := filepath.Join(c.Dir, "prism.toml")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "prism.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prismBin, "-config", cfgPath)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PRISM_ADMIN_TOKEN=", "PRISM_INTERNAL_AUTH_KEY=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prism: %v", err)
	}
	p := &Prism{
		t: t, Conf: c, cmd: cmd, done: make(chan error, 1), log: logf,
		Public:      "http://" + c.Listen,
		AdminURL:    "http://" + c.Admin,
		InternalURL: "http://" + c.Internal,
	}
	if c.ServiceOn {
		p.ServiceURL = "http://" + c.Service
	}
	go func() { p.done <- cmd.Wait() }()
	if err := p.waitHealthy(45 * time.Second); err != nil {
		p.Stop()
		logf.Close()
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prism log (%s):\n%s", c.Dir, tail(filepath.Join(c.Dir, "prism.log"), 60))
		}
		p.Stop()
		logf.Close()
	})
	return p, nil
}

// waitHealthy polls the admin /health until it answers 200; it returns an
// error when prism exits first.
func (p *Prism) waitHealthy(limit time.Duration) error {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("prism exited during start-up: %v\n%s", err, tail(filepath.Join(p.Conf.Dir, "prism.log"), 40))
		default:
		}
		resp, err := http.Get(p.AdminURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prism not healthy after %v\n%s", limit, tail(filepath.Join(p.Conf.Dir, "prism.log"), 40))
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// Stop sends SIGTERM and waits for the process; it returns the exit error
// and how long the exit took (0 when it had exited by itself). Calling Stop
// or Kill again is a no-op.
func (p *Prism) Stop() (error, time.Duration) {
	if p.ended {
		return nil, 0
	}
	p.ended = true
	select {
	case err := <-p.done: // it exited by itself (cmd.Wait returned)
		return err, 0
	default:
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err, time.Since(start)
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		return fmt.Errorf("prism ignored SIGTERM for 20s (killed): %v", err), time.Since(start)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Prism) Kill() {
	if p.ended {
		return
	}
	p.ended = true
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Pid is the prism process id.
func (p *Prism) Pid() int { return p.cmd.Process.Pid }

// Response is a fully read HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// noRedirect is a client that returns redirects instead of following them.
var noRedirect = &http.Client{
	Timeout: 60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Transport: &http.Transport{DisableCompression: true},
}

// Get requests path from the public port as siteHost with the given UA and
// extra headers ("Name: value"). A gzip body is decompressed.
func (p *Prism) Get(path, ua string, headers ...string) Response {
	p.t.Helper()
	return do(p.t, http.MethodGet, p.Public+path, ua, nil, headers...)
}

func do(t *testing.T, method, url, ua string, body io.Reader, headers ...string) Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = siteHost
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		if strings.EqualFold(k, "Host") {
			req.Host = strings.TrimSpace(v)
			continue
		}
		req.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: gzip: %v", method, url, err)
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, url, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// waitFor polls cond every 50ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// descendants returns the live (non-zombie) processes below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := procStat(n)
		if !ok || state == "Z" {
			continue
		}
		children[ppid] = append(children[ppid], n)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// procStat reads a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

// processesMentioning returns the live processes whose command line holds s.
func processesMentioning(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != "Z"
}

// browserPids returns the Chromium processes below pid.
func browserPids(pid int) []int {
	var out []int
	for _, c := range descendants(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		if err == nil && bytes.Contains(b, []byte("chrom")) {
			out = append(out, c)
		}
	}
	return out
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

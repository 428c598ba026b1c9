package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// lyingOrigin is an origin that breaks HTTP on purpose, by path:
//
//	/status/CODE   answers "HTTP/1.1 CODE X" with a short body
//	/short         announces 1000 bytes, sends 10, closes
//	/short-big     announces 200000 bytes, sends 100000 (past what PRISM holds back), closes
//	/trickle       announces 100 bytes, sends one every 100 ms
//	/mute          sends its headers, then nothing
//	/silent        never answers
//
// Every connection ends when the test does.
func lyingOrigin(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveLie(c, stop)
			}()
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

func serveLie(c net.Conn, stop <-chan struct{}) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	p := req.URL.Path
	wait := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d): // the origin's own pace, not a test wait
			return true
		}
	}
	switch {
	case strings.HasPrefix(p, "/status/"):
		code := strings.TrimPrefix(p, "/status/")
		body := "hi"
		if code == "204" || code == "304" {
			// No body where HTTP allows none: a body here stays in the
			// connection and garbles whichever response comes next on it
			// (the transport's own limit, not what this test is about).
			body = ""
		}
		io.WriteString(c, "HTTP/1.1 "+code+" X\r\nContent-Type: text/html\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	case p == "/short":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n0123456789")
	case p == "/short-big":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 200000\r\n\r\n"+strings.Repeat("x", 100000))
	case p == "/trickle":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\n")
		for range 100 {
			if !wait(100*time.Millisecond) || func() bool { _, err := io.WriteString(c, "x"); return err != nil }() {
				return
			}
		}
	case p == "/mute":
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\n")
		<-stop
	case p == "/silent":
		<-stop
	}
}

// lyingHarness is a harness whose host's origin is a lyingOrigin, served
// over a real listener (flushes and aborted connections are what is
// tested), with renders that fail at once unless set otherwise.
func lyingHarness(t *testing.T, opts ...harnessOpt) (*harness, string) {
	t.Helper()
	return originHarness(t, lyingOrigin(t), opts...)
}

// originHarness is lyingHarness for any origin.
func originHarness(t *testing.T, ou *url.URL, opts ...harnessOpt) (*harness, string) {
	t.Helper()
	sites, err := site.New(site.Options{Hosts: []site.Host{{
		ID: 1, Name: "example.com", Origin: ou,
		Dimensions: []site.Dimension{{ID: 2, Name: "desktop", MatchUA: []string{"@crawlers"}, Width: 1366, Height: 768}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]harnessOpt{func(o *testOptions) { o.Sites = sites }}, opts...)
	h := newHarness(t, opts...)
	h.render.set(func(context.Context, prerender.Request) (*prerender.Result, error) {
		return nil, errors.New("render failed")
	})
	srv := httptest.NewServer(h.p)
	t.Cleanup(srv.Close)
	return h, strings.TrimPrefix(srv.URL, "http://")
}

// statusLine sends GET path as ua and returns the final status line, the
// time it took to arrive, and what followed it until the connection ended
// (or limit passed); with limit 0 it returns after the status line.
func statusLine(t *testing.T, addr, path, ua string, limit time.Duration) (line string, took time.Duration, rest string, restErr error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	onlyStatus := limit == 0
	if onlyStatus {
		limit = 20 * time.Second
	}
	_ = c.SetDeadline(start.Add(limit))
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\nUser-Agent: "+ua+"\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for {
		line, err = br.ReadString('\n')
		took = time.Since(start)
		if err != nil {
			return "", took, "", err
		}
		if !strings.HasPrefix(line, "HTTP/1.1 1") || strings.HasPrefix(line, "HTTP/1.1 101") {
			break
		}
		for { // an informational response: its headers, then the next status line
			h, err := br.ReadString('\n')
			if err != nil || strings.TrimSpace(h) == "" {
				break
			}
		}
	}
	if onlyStatus {
		return strings.TrimSpace(line), took, "", nil
	}
	b, err := io.ReadAll(br)
	return strings.TrimSpace(line), took, string(b), err
}

func TestOriginInvalidStatus(t *testing.T) {
	h, addr := lyingHarness(t)
	cases := []struct {
		code string
		want string // status line prefix
	}{
		{"000", "HTTP/1.1 502"}, {"001", "HTTP/1.1 502"}, {"099", "HTTP/1.1 502"},
		{"1000", "HTTP/1.1 502"}, {"abc", "HTTP/1.1 502"}, {"-12", "HTTP/1.1 502"},
		{"2OO", "HTTP/1.1 502"}, {"100", "HTTP/1.1 502"}, {"101", "HTTP/1.1 502"},
		{"600", "HTTP/1.1 600"}, {"999", "HTTP/1.1 999"}, {"204", "HTTP/1.1 204"}, {"404", "HTTP/1.1 404"},
	}
	for _, c := range cases {
		for _, ua := range []string{uaPerson, uaGooglebot} {
			line, _, _, err := statusLine(t, addr, "/status/"+c.code, ua, 10*time.Second)
			if err != nil || !strings.HasPrefix(line, c.want) {
				t.Errorf("origin status %q, %s: status line %q (err %v), want %q", c.code, ua[:12], line, err, c.want)
			}
		}
	}
	if n := h.p.m.panics.Get(); n != 0 {
		t.Errorf("%d panics serving invalid origin statuses", n)
	}
}

func TestOriginTruncated(t *testing.T) {
	_, addr := lyingHarness(t)
	for _, ua := range []string{uaPerson, uaGooglebot} {
		// Within what is held back: a clean 502.
		line, _, rest, err := statusLine(t, addr, "/short", ua, 10*time.Second)
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 502") || !strings.Contains(rest, "Bad Gateway") {
			t.Errorf("%s, 10 of 1000 bytes: %q %q (err %v), want a 502", ua[:12], line, rest, err)
		}
		// Past it: the origin's status, then a transfer visibly cut short.
		req, _ := http.NewRequest("GET", "http://"+addr+"/short-big", nil)
		req.Host = "example.com"
		req.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s, 100000 of 200000 bytes: %v, want the origin's status line", ua[:12], err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) || len(b) >= 200000 {
			t.Errorf("%s, 100000 of 200000 bytes: %d, %d bytes, err %v; want 200 and an unexpected EOF", ua[:12], resp.StatusCode, len(b), err)
		}
	}
}

func TestOriginTrickleAndSilence(t *testing.T) {
	_, addr := lyingHarness(t, func(o *testOptions) {
		o.FallbackTimeout = 1500 * time.Millisecond
		o.OriginHeaderTimeout = 700 * time.Millisecond
	})
	// The status line leaves within originFlushDelay of the origin's
	// headers, however slowly the body comes (or if it never does).
	for _, path := range []string{"/trickle", "/mute"} {
		for _, ua := range []string{uaPerson, uaGooglebot} {
			line, took, _, _ := statusLine(t, addr, path, ua, 0)
			if !strings.HasPrefix(line, "HTTP/1.1 200") || took > 2*time.Second {
				t.Errorf("%s %s: status line %q after %v, want 200 within 2s", path, ua[:12], line, took)
			}
		}
	}
	// A crawler's fallback ends at FallbackTimeout: the transfer is cut.
	start := time.Now()
	statusLine(t, addr, "/mute", uaGooglebot, 20*time.Second)
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("fallback from a mute origin held the crawler %v, want about FallbackTimeout (1.5s)", d)
	}
	// An origin that never answers: 504 after the header timeout (people)
	// or the fallback deadline (crawlers).
	for _, ua := range []string{uaPerson, uaGooglebot} {
		line, took, _, err := statusLine(t, addr, "/silent", ua, 20*time.Second)
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 504") || took > 5*time.Second {
			t.Errorf("silent origin, %s: %q after %v (err %v), want a 504 within 5s", ua[:12], line, took, err)
		}
	}
}

// What the origin writer must pass on untouched: trailers, streamed
// (flushed) bodies, informational responses and protocol upgrades.
func TestOriginWriterPassesThrough(t *testing.T) {
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
		case "/hints":
			w.Header().Set("Link", "</app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		case "/upgrade":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	defer origin.Close()
	defer close(release)
	ou, _ := url.Parse(origin.URL)
	_, addr := originHarness(t, ou)
	get := func(path string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = "example.com"
		req.Header.Set("User-Agent", uaPerson)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp
	}
	resp := get("/trailer")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer: %q, trailer %v", b, resp.Trailer)
	}
	resp = get("/stream") // the origin holds the rest back: the first event must arrive
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if err != nil || line != "data: first\n" {
		t.Errorf("stream: %q %v", line, err)
	}
	resp = get("/hints")
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "after hints" {
		t.Errorf("early hints: %d %q", resp.StatusCode, b)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: example.com\r\nUser-Agent: "+uaPerson+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	for {
		h, err := br.ReadString('\n')
		if err != nil || strings.TrimSpace(h) == "" {
			break
		}
	}
	io.WriteString(c, "hello\n")
	echo, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 101") || echo != "echo hello\n" {
		t.Errorf("upgrade: %q then %q", status, echo)
	}
}

package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawRequest sends raw bytes to addr and returns the status line of the
// answer (or "" when the server closed without one).
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestHostileHTTP sends malformed and malicious requests to the public port:
// each gets a clear 4xx (or is handled as a normal request), and PRISM stays up.
func TestHostileHTTP(t *testing.T) {
	origin := newOrigin(t)
	p := startPrism(t, newConf(t, origin.URL))
	addr := strings.TrimPrefix(p.Public, "http://")

	t.Run("oversized header", func(t *testing.T) {
		r := p.Get("/", desktopBot, "X-Big: "+strings.Repeat("a", 200<<10))
		if r.Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("200 KiB header: status %d, want 431", r.Status)
		}
	})
	t.Run("NUL and traversal in the path", func(t *testing.T) {
		for _, path := range []string{"/a%00b", "/../../etc/passwd", "/a/%2e%2e/%2e%2e/%2e%2e/etc"} {
			status := rawRequest(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+siteHost+"\r\nUser-Agent: "+desktopBot+"\r\nConnection: close\r\n\r\n")
			if !strings.Contains(status, " 400 ") {
				t.Errorf("GET %s: %q, want 400", path, status)
			}
		}
	})
	t.Run("invalid UTF-8 is not a server error", func(t *testing.T) {
		r := p.Get("/bad-%ff%fe-utf8?q=%c3%28", desktopBot)
		if r.Status >= 500 {
			t.Errorf("invalid UTF-8: status %d", r.Status)
		}
	})
	t.Run("X-Forwarded-Host from an untrusted peer is ignored", func(t *testing.T) {
		r := p.Get("/spoof", desktopBot, "X-Forwarded-Host: evil.example")
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "Rendered by JS: /spoof") {
			t.Errorf("spoofed X-Forwarded-Host: status %d body %.200s", r.Status, r.Body)
		}
		r = p.Get("/spoof", desktopBot, "Host: evil.example", "X-Forwarded-Host: "+siteHost)
		if r.Status != http.StatusMisdirectedRequest {
			t.Errorf("unknown Host with forged X-Forwarded-Host: status %d, want 421", r.Status)
		}
	})
	t.Run("slowloris is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+siteHost+"\r\n") // and never the rest
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.ReadAll(c)
		if took := time.Since(start); err != nil || took > 10*time.Second {
			t.Errorf("half-sent request held the connection %v (err %v), want closed after read_header_timeout (2s)", took, err)
		}
	})
	if r, err := http.Get(p.AdminURL + "/health"); err != nil || r.StatusCode != http.StatusOK {
		t.Errorf("/health after hostile requests: %v %v", r, err)
	}
}

// Package redistest runs a real redis-server (Debian's package, which make
// test installs) on a free loopback port in a temp dir, for the tests of
// cluster mode: it may be killed, restarted on the same port and data,
// and stopped with SIGSTOP. Only tests import it.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process (and its restarts).
type Server struct {
	t         testing.TB
	bin, addr string
	dir       string
	args      []string
	cmd       *exec.Cmd
	done      chan struct{}
}

// Start runs redis-server with args (after the port, bind address, dir and
// "--save ”") until the test ends, and waits until it answers PING. It
// skips the test when redis-server is not installed.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found (install it: apt-get install redis-server, or make test)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, addr: ln.Addr().String(), dir: t.TempDir(), args: args}
	ln.Close()
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// URL is the server's redis:// URL (database 0).
func (s *Server) URL() string { return "redis://" + s.addr + "/0" }

// Restart runs the server again (after Kill) on the same port and data dir,
// and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(s.bin, append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no"}, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	s.done = done
	go func(cmd *exec.Cmd) { cmd.Wait(); close(done) }(s.cmd)
	deadline := time.Now().Add(10 * time.Second)
	for !s.answers() {
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s not answering PING after 10s", s.addr)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func (s *Server) answers() bool {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	fmt.Fprint(c, "PING\r\n")
	c.SetReadDeadline(time.Now().Add(time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "+PONG")
}

// Kill sends SIGKILL and waits for the process to be gone; a no-op when it
// is not running.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Signal sends sig (SIGSTOP, SIGCONT) to the running server.
func (s *Server) Signal(sig syscall.Signal) {
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal redis-server: %v", err)
	}
}

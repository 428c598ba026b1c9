// Command startup measures PRISM's start-up: it runs `prism -config FILE`,
// polls the public port every 2 ms for a cached URL until it is served as a
// HIT, then polls the admin /metrics until the key index is rebuilt, prints
// both times and the process's resident memory, and stops PRISM (SIGTERM).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("prism", "prism", "prism binary")
	cfg := flag.String("config", "", "prism config file (required)")
	public := flag.String("public", "", "public base URL (required)")
	admin := flag.String("admin", "", "admin base URL (required)")
	path := flag.String("path", "/c00/item-0000000", "a cached URL")
	host := flag.String("host", "site.test", "Host header")
	logPath := flag.String("log", os.DevNull, "file for prism's output")
	token := flag.String("token", "", "admin bearer token")
	limit := flag.Duration("limit", 60*time.Second, "give up after")
	flag.Parse()
	if err := run(*bin, *cfg, *public, *admin, *path, *host, *logPath, *token, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "startup:", err)
		os.Exit(1)
	}
}

func run(bin, cfg, public, admin, path, host, logPath, token string, limit time.Duration) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()

	poll := func(check func() bool) (time.Duration, error) {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for !check() {
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("gave up after %v", limit)
			case err := <-exited:
				return 0, fmt.Errorf("prism exited: %v", err)
			case <-t.C:
			}
		}
		return time.Since(start), nil
	}
	hit, err := poll(func() bool {
		req, _ := http.NewRequest(http.MethodGet, public+path, nil)
		req.Host = host
		req.Header.Set("User-Agent", "Googlebot/2.1")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Prism-Cache") == "HIT"
	})
	if err != nil {
		return fmt.Errorf("first hit: %w", err)
	}
	ready, err := poll(func() bool {
		req, _ := http.NewRequest(http.MethodGet, admin+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "prism_cache_index_ready ") {
				return strings.TrimSpace(strings.TrimPrefix(sc.Text(), "prism_cache_index_ready ")) == "1"
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("index ready: %w", err)
	}
	fmt.Printf("startup first_hit_ms=%d index_ready_ms=%d rss_mb=%d\n", hit.Milliseconds(), ready.Milliseconds(), rssMB(cmd.Process.Pid))
	return nil
}

// rssMB reads VmRSS of pid from /proc, in MiB (0 if unreadable).
func rssMB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int
			fmt.Sscan(f[1], &kb)
			return kb / 1024
		}
	}
	return 0
}

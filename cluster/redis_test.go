package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/prismproxy/prism/cachestore"
)

// realRedis runs a redis-server (the Debian package make test installs)
// with args on a free loopback port until the test ends; it skips the test
// when redis-server is not installed.
func realRedis(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (make test installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", t.TempDir(), "--save", ""}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	waitFor(t, "redis-server answering", func() bool {
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

func TestCheckRedis(t *testing.T) {
	unsafe := testNodeAt(t, realRedis(t, "--appendonly", "no", "--maxmemory-policy", "allkeys-lru"), "a", nil)
	warns := unsafe.CheckRedis(context.Background())
	if len(warns) != 2 || !strings.Contains(warns[0], "appendonly") || !strings.Contains(warns[1], "allkeys-lru") {
		t.Fatalf("warnings %q, want appendonly and eviction", warns)
	}
	for _, policy := range []string{"noeviction", "volatile-lru"} {
		safe := testNodeAt(t, realRedis(t, "--appendonly", "yes", "--maxmemory-policy", policy), "a", nil)
		if warns := safe.CheckRedis(context.Background()); len(warns) != 0 {
			t.Fatalf("%s: warnings %q, want none", policy, warns)
		}
	}
}

// TestCatchUpAfterTrim: a node that was away while the stream was trimmed
// past its position cannot know what it missed, and empties its cache
// before serving; one whose position is still in the stream keeps its pages.
func TestCatchUpAfterTrim(t *testing.T) {
	url := realRedis(t)
	a := testNodeAt(t, url, "a", nil) // not running: the test trims itself
	if err := a.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	away, kept := t.TempDir(), t.TempDir()
	awayStore, keptStore := newStore(t), newStore(t)
	for _, n := range []*Node{
		testNodeAt(t, url, "away", func(o *Options) { o.StateDir, o.Store = away, awayStore }),
		testNodeAt(t, url, "kept", func(o *Options) { o.StateDir, o.Store = kept, keptStore }),
	} {
		if err := n.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
		n.leave()
	}
	page := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/page"}
	awayStore.Put(entry(page, time.Now()))
	keptStore.Put(entry(page, time.Now()))
	for i := range 20 {
		k := cachestore.Key{HostID: 1, DimensionID: 1, URL: fmt.Sprintf("/other-%d", i)}
		l, _ := a.Lock(context.Background(), k)
		l.Release(context.Background(), entry(k, time.Now()))
	}
	// Trim the stream past both positions for away; kept has caught up.
	kept2 := testNodeAt(t, url, "kept", func(o *Options) { o.StateDir, o.Store = kept, keptStore })
	if err := kept2.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	kept2.leave()
	a.streamMax = 1
	a.trimStream(context.Background())
	if n, _ := a.rdb.XLen(context.Background(), a.keys.events()).Result(); n != 1 {
		t.Fatalf("stream length %d after the trim, want 1", n)
	}
	for _, tc := range []struct {
		id, dir string
		store   *cachestore.Store
		keeps   bool
	}{{"away", away, awayStore, false}, {"kept", kept, keptStore, true}} {
		n := testNodeAt(t, url, tc.id, func(o *Options) { o.StateDir, o.Store = tc.dir, tc.store })
		if err := n.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, ok := tc.store.Get(page); ok != tc.keeps {
			t.Errorf("%s after the trim: page kept %v, want %v", tc.id, ok, tc.keeps)
		}
	}
}

// TestNodeIDTakenWhileRunning: a node whose id another process registers
// (a second node misconfigured with the same id, after this one's
// registration lapsed) stops with ErrNodeIDInUse instead of sharing it.
func TestNodeIDTakenWhileRunning(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "same", nil)
	if err := a.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	mr.Set(a.keys.node("same"), "another-process-token")
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNodeIDInUse) {
			t.Fatalf("Run = %v, want ErrNodeIDInUse", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run went on sharing its node id")
	}
}

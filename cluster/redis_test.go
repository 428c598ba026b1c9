package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/internal/redistest"
)

// realRedis runs a redis-server with args until the test ends and returns
// its URL; it skips the test when redis-server is not installed.
func realRedis(t *testing.T, args ...string) string {
	t.Helper()
	return redistest.Start(t, args...).URL()
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

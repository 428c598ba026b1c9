package cluster

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/internal/metricdoc"
)

var quiet = slog.New(slog.DiscardHandler)

func newStore(t *testing.T) *cachestore.Store {
	t.Helper()
	s, err := cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.Stats().IndexReady {
		if time.Now().After(deadline) {
			t.Fatal("store index not ready")
		}
		time.Sleep(time.Millisecond)
	}
	return s
}

// testNode is a Node over mr with its own store and state dir.
func testNode(t *testing.T, mr *miniredis.Miniredis, id string, mod func(*Options)) *Node {
	t.Helper()
	return testNodeAt(t, "redis://"+mr.Addr(), id, mod)
}

// testNodeAt is testNode on the Redis at url.
func testNodeAt(t *testing.T, url, id string, mod func(*Options)) *Node {
	t.Helper()
	o := Options{
		URL: url, NodeID: id, Store: newStore(t), HostIDs: []int{1, 2},
		StateDir: t.TempDir(), LockLease: time.Second, CallTimeout: time.Second, PurgeWait: 5 * time.Second,
		Logger: testLogger(t), Metrics: metricdoc.NewSet(),
	}
	if mod != nil {
		mod(&o)
	}
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// start joins n and runs it until the test ends.
func start(t *testing.T, n *Node) {
	t.Helper()
	if err := n.Join(context.Background()); err != nil {
		t.Fatalf("Join: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func entry(k cachestore.Key, at time.Time) *cachestore.Entry {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("<html>" + k.URL + "</html>"))
	zw.Close()
	return &cachestore.Entry{Key: k, Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: b.Bytes(), RenderedAt: at}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSharedTierRoundTrip(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/p?x=1"}
	if e := b.Lookup(context.Background(), k); e != nil {
		t.Fatalf("Lookup before any render = %v", e)
	}
	l, err := a.Lock(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	l.Release(context.Background(), entry(k, time.Now()))
	e := b.Lookup(context.Background(), k)
	if e == nil || e.Key != k || e.Status != 200 {
		t.Fatalf("Lookup on another node = %+v", e)
	}
	// What Redis holds is checked like a disk file: garbage is a miss.
	mr.Set(a.keys.entry(hash(k)), "garbage")
	if e := b.Lookup(context.Background(), k); e != nil {
		t.Fatal("a corrupt shared entry was returned")
	}
	// An entry stored under another key's name is refused too.
	other := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/other"}
	raw, _ := cachestore.Marshal(entry(other, time.Now()))
	mr.Set(a.keys.entry(hash(k)), string(raw))
	if e := b.Lookup(context.Background(), k); e != nil {
		t.Fatal("an entry for another key was returned")
	}
}

func TestLockWaitsForHolderAndWakes(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", func(o *Options) { o.LockLease = time.Minute }), testNode(t, mr, "b", func(o *Options) { o.LockLease = time.Minute })
	start(t, a)
	start(t, b)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/x"}
	la, err := a.Lock(context.Background(), k)
	if err != nil || la.Waited() {
		t.Fatalf("first Lock = %v waited %v", err, la.Waited())
	}
	got := make(chan bool, 1)
	go func() {
		lb, err := b.Lock(context.Background(), k)
		if err != nil {
			t.Error(err)
			got <- false
			return
		}
		got <- lb.Waited()
		lb.Release(context.Background(), nil)
	}()
	select {
	case <-got:
		t.Fatal("second node took a held lock")
	case <-time.After(50 * time.Millisecond):
	}
	la.Release(context.Background(), nil)
	select {
	case waited := <-got:
		if !waited {
			t.Fatal("second node did not report waiting")
		}
	case <-time.After(10 * time.Second): // the lease is a minute: only the wake-up can free it
		t.Fatal("waiter not woken by the release")
	}
	if b.m.lockWaited.Get() != 1 {
		t.Fatalf("waited counter %d, want 1", b.m.lockWaited.Get())
	}
}

func TestLockTakenOverWhenHolderDies(t *testing.T) {
	mr := miniredis.RunT(t)
	b := testNode(t, mr, "b", nil)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/dead"}
	// A dead holder: its lock is set, and nothing renews or releases it.
	mr.Set(b.keys.lock(hash(k)), "someone-else")
	mr.SetTTL(b.keys.lock(hash(k)), time.Second)
	got := make(chan error, 1)
	go func() {
		l, err := b.Lock(context.Background(), k)
		if err == nil {
			l.Release(context.Background(), nil)
		}
		got <- err
	}()
	waitFor(t, "the waiter to find the lock held", func() bool { return b.m.lockBusy.Get() > 0 })
	mr.FastForward(time.Second) // the lease lapses
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if b.m.lockTakenOver.Get() != 1 {
		t.Fatalf("taken over counter %d, want 1", b.m.lockTakenOver.Get())
	}
	// Release is token-checked: a lock now held by another owner stays.
	mr.Set(b.keys.lock(hash(k)), "third")
	l, _ := b.Lock(ctxTimeout(t, 50*time.Millisecond), k)
	if l != nil {
		t.Fatal("took a lock another owner holds")
	}
	if v, _ := mr.Get(b.keys.lock(hash(k))); v != "third" {
		t.Fatalf("lock value %q, want the other owner's", v)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRenderStartedBeforePurgeIsNotPublished(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	start(t, a)
	start(t, b)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/racy"}
	l, err := a.Lock(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	b.Purge(context.Background(), Purge{Keys: []cachestore.Key{k}}) // while a renders
	l.Release(context.Background(), entry(k, time.Now()))
	if e := b.Lookup(context.Background(), k); e != nil {
		t.Fatal("a render that began before a purge was published after it")
	}
	if a.m.refused.Get() != 1 {
		t.Fatalf("refused counter %d, want 1", a.m.refused.Get())
	}
}

func TestPurgeReachesEveryNodeAndLateJoiners(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	cDir := t.TempDir()
	cStore := newStore(t)
	c := testNode(t, mr, "c", func(o *Options) { o.StateDir, o.Store = cDir, cStore })
	start(t, a)
	start(t, b)
	if err := c.Join(context.Background()); err != nil { // c was here once, then stopped
		t.Fatal(err)
	}
	c.leave()
	k1 := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/blog/a"}
	k2 := cachestore.Key{HostID: 2, DimensionID: 1, URL: "/blog/b"}
	k3 := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/shop/c"}
	rendered := time.Now().Add(-time.Minute)
	for _, k := range []cachestore.Key{k1, k2, k3} {
		l, _ := a.Lock(context.Background(), k)
		l.Release(context.Background(), entry(k, rendered))
	}
	waitFor(t, "b to see a's renders", func() bool { return b.m.eventsApplied.Get() == 3 })
	for _, n := range []*Node{a, b, c} {
		for _, k := range []cachestore.Key{k1, k2, k3} {
			if err := n.opts.Store.Put(entry(k, rendered)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// a purges a glob: a applied it itself (as adminapi does), b applies it
	// from the stream before Purge returns; c is down and catches up later.
	a.opts.Store.DeleteFunc(func(k cachestore.Key) bool { return k != k3 })
	res := a.Purge(context.Background(), Purge{Glob: "/blog/**"})
	if res.Pending || res.Live != 2 || res.Applied != 2 {
		t.Fatalf("purge result %+v, want applied by both live nodes", res)
	}
	if _, ok := b.opts.Store.Get(k1); ok {
		t.Fatal("b still holds a purged page after Purge returned")
	}
	if _, ok := b.opts.Store.Get(k3); !ok {
		t.Fatal("b lost a page the glob did not match")
	}
	for _, k := range []cachestore.Key{k1, k2} {
		if e := b.Lookup(context.Background(), k); e != nil {
			t.Fatalf("%v still in the shared tier", k)
		}
	}
	if e := b.Lookup(context.Background(), k3); e == nil {
		t.Fatal("unmatched page left the shared tier")
	}
	// c comes back: it applies what it missed before serving.
	c2 := testNode(t, mr, "c", func(o *Options) { o.StateDir, o.Store = cDir, cStore })
	if err := c2.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := cStore.Get(k1); ok {
		t.Fatal("a node that was down serves a page purged meanwhile")
	}
	if _, ok := cStore.Get(k3); !ok {
		t.Fatal("the late joiner lost an unpurged page")
	}
}

func TestPurgeWhileRedisDownIsDeliveredLater(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	start(t, a)
	start(t, b)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/late"}
	b.opts.Store.Put(entry(k, time.Now()))
	mr.SetError("LOADING Redis is loading the dataset in memory") // every command fails
	res := a.Purge(context.Background(), Purge{Keys: []cachestore.Key{k}})
	if !res.Pending {
		t.Fatalf("purge with Redis down = %+v, want pending", res)
	}
	if _, ok := b.opts.Store.Get(k); !ok {
		t.Fatal("b applied a purge Redis never carried")
	}
	mr.SetError("")
	waitFor(t, "b to apply the delivered purge", func() bool { _, ok := b.opts.Store.Get(k); return !ok })
}

func TestNodeIDInUse(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "same", nil)
	start(t, a)
	b := testNode(t, mr, "same", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Join(ctx); err == nil {
		t.Fatal("a second live node with the same id joined")
	}
}

func TestMemberRoundTrip(t *testing.T) {
	for _, k := range []cachestore.Key{{HostID: 1, DimensionID: 2, URL: "/a:b?c=d:e"}, {HostID: 10, DimensionID: 1, URL: "/"}} {
		got, ok := parseMember(member(k))
		if !ok || got != k {
			t.Errorf("parseMember(member(%v)) = %v %v", k, got, ok)
		}
	}
	for _, s := range []string{"", "1:2", "x:1:/a", "1:x:/a", "0:1:/a", "1:1:"} {
		if _, ok := parseMember(s); ok {
			t.Errorf("parseMember(%q) accepted", s)
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quiet
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

func TestRenderWithoutTheLockStaysLocal(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/outage"}
	mr.SetError("LOADING Redis is loading the dataset in memory")
	l, err := a.Lock(context.Background(), k) // Redis fails: a stand-in lease
	if err != nil || l.Waited() {
		t.Fatalf("Lock with Redis failing = %v, want a stand-in at once", err)
	}
	mr.SetError("")
	// A purge elsewhere while a rendered without the lock: no epoch was
	// recorded, so the render must not reach the shared tier.
	b.Purge(context.Background(), Purge{Keys: []cachestore.Key{k}})
	l.Release(context.Background(), entry(k, time.Now()))
	if e := b.Lookup(context.Background(), k); e != nil {
		t.Fatal("a render made without the lock was published")
	}
	if a.m.lockLocal.Get() != 1 {
		t.Fatalf("local lock counter %d, want 1", a.m.lockLocal.Get())
	}
}

func TestNewerRenderElsewhereReplacesTheLocalCopy(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := testNode(t, mr, "a", nil), testNode(t, mr, "b", nil)
	start(t, a)
	start(t, b)
	old := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/news"}
	newer := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/kept"}
	now := time.Now()
	b.opts.Store.Put(entry(old, now.Add(-time.Hour)))
	b.opts.Store.Put(entry(newer, now)) // newer here than what a renders
	for _, r := range []struct {
		k  cachestore.Key
		at time.Time
	}{{old, now.Add(-time.Minute)}, {newer, now.Add(-time.Minute)}} {
		l, _ := a.Lock(context.Background(), r.k)
		l.Release(context.Background(), entry(r.k, r.at))
	}
	waitFor(t, "b to apply a's renders", func() bool { return b.m.eventsApplied.Get() == 2 })
	if _, ok := b.opts.Store.Get(old); ok {
		t.Fatal("b keeps serving its older copy after a re-rendered the page")
	}
	if _, ok := b.opts.Store.Get(newer); !ok {
		t.Fatal("b dropped a copy newer than a's render")
	}
}

// TestPendingPurgeSurvivesRestart: a purge made while Redis is down, on a
// node that then restarts before Redis is back, still reaches the cluster;
// an unreadable pending file becomes a purge of everything.
func TestPendingPurgeSurvivesRestart(t *testing.T) {
	mr := miniredis.RunT(t)
	state := t.TempDir()
	b := testNode(t, mr, "b", nil)
	start(t, b)
	k := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/kept"}
	other := cachestore.Key{HostID: 2, DimensionID: 1, URL: "/other"}
	b.opts.Store.Put(entry(k, time.Now()))
	b.opts.Store.Put(entry(other, time.Now()))

	mr.SetError("LOADING down")
	first := testNode(t, mr, "a", func(o *Options) { o.StateDir = state })
	if res := first.Purge(context.Background(), Purge{Keys: []cachestore.Key{k}}); !res.Pending {
		t.Fatalf("purge = %+v, want pending", res)
	}
	first.Close() // the process ends before Redis is back

	mr.SetError("")
	again := testNode(t, mr, "a", func(o *Options) { o.StateDir = state })
	start(t, again)
	waitFor(t, "b to apply the purge kept across the restart", func() bool { _, ok := b.opts.Store.Get(k); return !ok })
	if _, ok := b.opts.Store.Get(other); !ok {
		t.Fatal("b dropped a page the purge did not name")
	}
	waitFor(t, "the pending file removed once delivered", func() bool {
		_, err := os.Stat(filepath.Join(state, "cluster-pending-purges.json"))
		return os.IsNotExist(err)
	})

	// A corrupt file: everything is purged rather than something missed.
	corrupt := t.TempDir()
	os.WriteFile(filepath.Join(corrupt, "cluster-pending-purges.json"), []byte(`[{"t":"purge"`), 0o600)
	c := testNode(t, mr, "c", func(o *Options) { o.StateDir = corrupt })
	start(t, c)
	waitFor(t, "b to apply the purge of everything", func() bool { _, ok := b.opts.Store.Get(other); return !ok })
}

// TestGlobPurgeOfTheSharedTier: a glob purge removes exactly the pages it
// selects from Redis, read from the URL index by the glob's literal prefix
// (over several chunks) or whole when it has none; purge-all empties it;
// index members of expired entries are trimmed.
func TestGlobPurgeOfTheSharedTier(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	ctx := context.Background()
	now := time.Now()
	var keys []cachestore.Key
	for i := range scanBatch + 500 { // more than one chunk under /blog/
		keys = append(keys, cachestore.Key{HostID: 1, DimensionID: 1 + i%2, URL: fmt.Sprintf("/blog/%05d", i)})
	}
	keys = append(keys,
		cachestore.Key{HostID: 1, DimensionID: 1, URL: "/blog"},
		cachestore.Key{HostID: 1, DimensionID: 1, URL: "/blogger/x"},
		cachestore.Key{HostID: 1, DimensionID: 1, URL: "/shop/a.html"},
		cachestore.Key{HostID: 1, DimensionID: 1, URL: "/shop/b.json"},
		cachestore.Key{HostID: 2, DimensionID: 1, URL: "/blog/00001"},
	)
	for _, k := range keys {
		a.publish(ctx, entry(k, now), "0")
	}
	shared := func(k cachestore.Key) bool { return mr.Exists(a.keys.entry(hash(k))) }
	check := func(what string, gone func(cachestore.Key) bool) {
		t.Helper()
		for _, k := range keys {
			if shared(k) == gone(k) {
				t.Fatalf("after %s: %v shared=%v", what, k, shared(k))
			}
		}
	}
	if err := a.removeShared(ctx, event{Glob: "/blog/*", HostID: 1}); err != nil {
		t.Fatal(err)
	}
	isBlog1 := func(k cachestore.Key) bool { return k.HostID == 1 && strings.HasPrefix(k.URL, "/blog/") }
	check("/blog/* on host 1", isBlog1)
	if err := a.removeShared(ctx, event{Glob: "**.html"}); err != nil { // no literal prefix
		t.Fatal(err)
	}
	check("**.html", func(k cachestore.Key) bool { return isBlog1(k) || k.URL == "/shop/a.html" })
	if n, _ := mr.ZMembers(a.keys.urls(1)); len(n) != 3 {
		t.Fatalf("URL index of host 1 holds %v, want the 3 pages left", n)
	}

	// Trim: members of entries older than MaxAge go; fresh ones stay.
	old := cachestore.Key{HostID: 1, DimensionID: 1, URL: "/old"}
	a.publish(ctx, entry(old, now.Add(-23*time.Hour-59*time.Minute)), "0")
	mr.FastForward(2 * time.Minute) // the old entry's key lapses
	a.opts.Now = func() time.Time { return now.Add(2 * time.Minute) }
	a.trimIndexes(ctx)
	if ms, _ := mr.ZMembers(a.keys.urls(1)); len(ms) != 3 || slices.Contains(ms, urlMember(old)) {
		t.Fatalf("URL index after trim: %q", ms)
	}

	if err := a.removeShared(ctx, event{All: true}); err != nil {
		t.Fatal(err)
	}
	check("purge all", func(cachestore.Key) bool { return true })
	for _, h := range []int{1, 2} {
		if mr.Exists(a.keys.urls(h)) || mr.Exists(a.keys.index(h)) {
			t.Fatalf("host %d's indexes left after purge all", h)
		}
	}
}

// TestPurgeLag: a node reading an idle stream reports (almost) no purge
// lag; one cut off from Redis reports a growing one.
func TestPurgeLag(t *testing.T) {
	mr := miniredis.RunT(t)
	a := testNode(t, mr, "a", nil)
	start(t, a)
	waitFor(t, "an idle node's lag under 2s", func() bool { return a.lag() < 2*time.Second })
	time.Sleep(1500 * time.Millisecond) // an idle stream for longer than one blocking read
	if l := a.lag(); l > 2*time.Second {
		t.Fatalf("idle node's purge lag %v, want under 2s", l)
	}
	mr.SetError("LOADING down")
	waitFor(t, "a cut-off node's lag to grow past 2s", func() bool { return a.lag() > 2*time.Second })
	mr.SetError("")
	waitFor(t, "the lag back under 2s", func() bool { return a.lag() < 2*time.Second })
}

// TestClientLogger: the Redis client's own messages reach the node's logger
// at debug level, not stderr.
func TestClientLogger(t *testing.T) {
	var b bytes.Buffer
	l := ClientLogger(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "refused")
	if got := b.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "failed to dial after 5 attempts: refused") {
		t.Fatalf("logged %q", got)
	}
}

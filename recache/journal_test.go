package recache

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

func journalLines(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatalf("read journal: %v", err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func appendRaw(t *testing.T, dir string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestJournalReplayAfterCrash(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 2, 1, ref, nil)
	f.run(t)
	mustEnqueue(t, f.s, Normal, key(1, 1, "/n1"), key(2, 2, "/n2"), key(1, 1, "/done"))
	mustEnqueue(t, f.s, High, key(1, 1, "/h1"), key(1, 1, "/n1")) // n1 raised to high
	f.s.Track(&cachestore.Entry{Key: key(1, 2, "/auto"), RenderedAt: f.clk.Now()})
	f.s.Forget(key(1, 1, "/done"))
	// Render one entry to completion: its done record must keep it out.
	f.step(t)
	rendered := ref.Calls()[0]
	f.cap.Set(0)
	f.s.Tick(f.clk.Now()) // writes the done record

	// "Crash": no Close. Then a torn final record, a corrupt record and an
	// overlong line in the middle.
	good := appendRecord(nil, addRecord(key(2, 1, "/late"), Normal))
	corrupt := bytes.Replace(good, []byte("/late"), []byte("/evil"), 1) // checksum mismatch
	long := append(bytes.Repeat([]byte("x"), maxRecord+10), '\n')
	var tail []byte
	tail = append(tail, corrupt...)
	tail = append(tail, long...)
	tail = append(tail, good...)
	torn := appendRecord(nil, addRecord(key(2, 1, "/torn"), High))
	tail = append(tail, torn[:len(torn)/2]...)
	appendRaw(t, f.dir, tail)

	f.cap.Set(1)
	g := reopen(t, f)
	st := g.Status()
	want1 := HostStatus{High: QueueStatus{1, 1}}
	want2 := HostStatus{Normal: QueueStatus{2, 2}}
	// Whichever high entry rendered first is gone; the other stays.
	if rendered != key(1, 1, "/h1") && rendered != key(1, 1, "/n1") {
		t.Fatalf("first render %v, want a high entry", rendered)
	}
	if st.Hosts[1] != want1 || st.Hosts[2] != want2 {
		t.Fatalf("after replay host1 %+v host2 %+v, want %+v and %+v", st.Hosts[1], st.Hosts[2], want1, want2)
	}
	// Start-up compaction left only live records, and a clean tail.
	if lines := journalLines(t, f.dir); len(lines) != 3 {
		t.Fatalf("journal after restart has %d lines, want 3:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	// The replayed entries are rendered: high first.
	ref2 := &refresher{}
	g.opts.Refresh = ref2.Refresh
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Run(ctx) }()
	for range 3 {
		g.Tick(f.clk.Now())
		waitFor(t, "idle", func() bool { return g.Status().InternalQueue == 0 })
	}
	cancel()
	<-done
	got := urls(ref2.Calls())
	if len(got) != 3 || (got[0] != "/h1" && got[0] != "/n1") {
		t.Fatalf("replayed renders %v, want the high entry first then /n2 and /late", got)
	}
}

func TestJournalReplayKeepsArrivalOrder(t *testing.T) {
	f := newFixture(t, 1, 0, nil, nil)
	var keys []cachestore.Key
	for i := range 20 {
		keys = append(keys, key(1, 1, fmt.Sprintf("/p%02d", i)))
	}
	for _, k := range keys {
		mustEnqueue(t, f.s, Normal, k)
	}
	g := reopen(t, f) // no Close: crash
	ref := &refresher{}
	g.opts.Refresh = ref.Refresh
	g.opts.Workers = 1
	f.cap.Set(20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Run(ctx) }()
	g.Tick(f.clk.Now())
	waitFor(t, "idle", func() bool { return g.Status().InternalQueue == 0 })
	cancel()
	<-done
	if got := ref.Calls(); len(got) != 20 || got[0] != keys[0] || got[19] != keys[19] {
		t.Fatalf("replayed order %v, want %v", urls(got), urls(keys))
	}
}

func TestJournalCompaction(t *testing.T) {
	ref := &refresher{}
	f := newFixture(t, 1, 1000, ref, nil)
	f.s.compactMin = 50
	f.s.nextCheck = 50
	f.run(t)
	for round := range 20 {
		var keys []cachestore.Key
		for i := range 20 {
			keys = append(keys, key(1, 1+i%2, fmt.Sprintf("/r%d/%d", round, i)))
		}
		mustEnqueue(t, f.s, High, keys...)
		f.step(t)
	}
	mustEnqueue(t, f.s, Normal, key(1, 1, "/left"))
	// 400 adds and 400 dones were written; compaction kept the file small.
	lines := journalLines(t, f.dir)
	if len(lines) > 200 {
		t.Fatalf("journal holds %d records after compaction, want few", len(lines))
	}
	g := reopen(t, f)
	assertQueues(t, g, 1, HostStatus{Normal: QueueStatus{1, 1}})
}

func TestJournalFsyncedBeforeEnqueueReturns(t *testing.T) {
	f := newFixture(t, 1, 0, nil, nil)
	mustEnqueue(t, f.s, High, key(1, 1, "/a"), key(1, 2, "/a"))
	mustEnqueue(t, f.s, Auto, key(1, 1, "/auto-not-journaled"))
	rp, err := replayJournal(filepath.Join(f.dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.keys) != 2 || rp.prio[key(1, 1, "/a")] != High {
		t.Fatalf("journal holds %v, want the two high keys", rp.keys)
	}
}

func TestReplayGarbageJournal(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"binary", "\x00\x01\x02\xff\n\xfe"},
		{"bad checksum", "00000000 add high 1 1 \"/x\"\n"},
		{"unknown op", mustLine(record{Op: "drop", Host: 1, Dim: 1, URL: "/x"})},
		{"autorecache add", mustLine(record{Op: "add", Prio: Auto, Host: 1, Dim: 1, URL: "/x"})},
		{"unconfigured host", mustLine(record{Op: "add", Prio: High, Host: 42, Dim: 1, URL: "/x"})},
		{"no newline at all", strings.Repeat("z", 3*maxRecord)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, journalName), []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := New(Options{Sites: testSites(t, 1), Refresh: (&refresher{}).Refresh,
				Capacity: func() int { return 0 }, JournalDir: dir, Logger: quiet})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer s.Close()
			assertQueues(t, s, 1, HostStatus{})
		})
	}
}

func mustLine(r record) string { return string(appendRecord(nil, r)) }

func TestRebuildAutoFromStore(t *testing.T) {
	store, err := cachestore.New(cachestore.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	storeDone := make(chan error, 1)
	go func() { storeDone <- store.Run(ctx) }()
	defer func() { cancel(); <-storeDone; store.Close() }()

	clk := newClock()
	put := func(k cachestore.Key, at time.Time) {
		t.Helper()
		if err := store.Put(&cachestore.Entry{Key: k, Status: 200, Body: gz(t, "<html>ok</html>"), RenderedAt: at}); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	put(key(1, 1, "/old"), clk.Now().Add(-13*time.Hour)) // due
	put(key(1, 2, "/new"), clk.Now())                    // due in 12h
	put(key(2, 1, "/h2"), clk.Now().Add(-2*time.Hour))   // host 2: 1h interval: due
	put(key(9, 1, "/gone-host"), clk.Now())              // not configured: skipped
	waitFor(t, "store index", func() bool { return store.Stats().IndexReady })

	ref := &refresher{}
	s, err := New(Options{Sites: testSites(t, 2), Refresh: ref.Refresh, Capacity: func() int { return 10 },
		Store: store, JournalDir: t.TempDir(), Now: clk.Now, Tick: 24 * time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustEnqueue(t, s, High, key(1, 1, "/old")) // queued already: rebuild leaves it high
	s.rebuildAuto(ctx)
	assertQueues(t, s, 1, HostStatus{High: QueueStatus{1, 1}, Auto: QueueStatus{1, 0}})
	assertQueues(t, s, 2, HostStatus{Auto: QueueStatus{1, 1}})

	// An autorecache entry whose key was deleted is dropped, not rendered.
	store.Delete(key(2, 1, "/h2"))
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(runCtx) }()
	defer func() { stop(); <-runDone }()
	s.Tick(clk.Now())
	waitFor(t, "idle", func() bool { return s.Status().InternalQueue == 0 })
	if got := urls(ref.Calls()); len(got) != 1 || got[0] != "/old" {
		t.Fatalf("renders %v, want only /old", got)
	}
	if g := s.m.gone.Get(); g != 1 {
		t.Fatalf("gone %d, want 1", g)
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRecordRoundTrip(t *testing.T) {
	for _, u := range []string{"/", "/a b?c=\"d\"", "/line\nbreak", "/bad\xff\xfeutf8", "/ünï", "/" + strings.Repeat("%", maxURL)} {
		for _, r := range []record{addRecord(key(3, 4, u), High), addRecord(key(1, 2, u), Normal), doneRecord(key(-1, 0, u))} {
			line := appendRecord(nil, r)
			if bytes.Count(line, []byte{'\n'}) != 1 || line[len(line)-1] != '\n' || len(line) > maxRecord {
				t.Fatalf("record for %q is not one bounded line: %q", u, line)
			}
			got, ok := parseRecord(line[:len(line)-1])
			if !ok || got != r {
				t.Fatalf("round trip of %+v = %+v, %v", r, got, ok)
			}
			// Any single flipped byte is detected.
			for i := range line[:len(line)-1] {
				bad := bytes.Clone(line[:len(line)-1])
				bad[i] ^= 0x20
				if got, ok := parseRecord(bad); ok && got != r {
					t.Fatalf("corrupted record accepted as %+v", got)
				}
			}
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(mustLine(addRecord(key(1, 1, "/a"), High))))
	f.Add([]byte("00000000 done - 1 1 \"/x\""))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := parseRecord(line)
		if !ok {
			return
		}
		again, ok := parseRecord(bytes.TrimSuffix(appendRecord(nil, r), []byte{'\n'}))
		if !ok || again != r {
			t.Fatalf("accepted %+v does not round-trip", r)
		}
	})
}

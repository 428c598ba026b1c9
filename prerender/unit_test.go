package prerender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-rod/rod/lib/proto"
)

func TestApplyMeta(t *testing.T) {
	base, _ := url.Parse("https://example.com/a/b?q=1")
	tests := []struct {
		name     string
		status   int
		metas    [][2]string
		want     int
		wantHdrs map[string]string
	}{
		{"none", 200, nil, 200, nil},
		{"prerender 404", 200, [][2]string{{"prerender-status-code", "404"}}, 404, nil},
		{"render dialect", 200, [][2]string{{"render:status_code", " 410 "}}, 410, nil},
		{"case insensitive name", 200, [][2]string{{"Prerender-Status-Code", "404"}}, 404, nil},
		{"redirect", 200, [][2]string{{"prerender-status-code", "301"}, {"prerender-header", "Location: https://x.test/new"}}, 301,
			map[string]string{"Location": "https://x.test/new"}},
		{"relative location", 200, [][2]string{{"render:status_code", "302"}, {"render:header", "location: ../c"}}, 302,
			map[string]string{"Location": "https://example.com/c"}},
		{"3xx without location ignored", 200, [][2]string{{"prerender-status-code", "301"}}, 200, nil},
		{"invalid status ignored", 200, [][2]string{{"prerender-status-code", "abc"}, {"prerender-status-code", "99"}, {"prerender-status-code", "600"}}, 200, nil},
		{"first status wins", 200, [][2]string{{"prerender-status-code", "404"}, {"render:status_code", "503"}}, 404, nil},
		{"first valid status wins", 200, [][2]string{{"prerender-status-code", "abc"}, {"prerender-status-code", "99"}, {"render:status_code", "410"}, {"prerender-status-code", "404"}}, 410, nil},
		{"custom header", 200, [][2]string{{"prerender-header", "X-Robots-Tag: noindex"}}, 200, map[string]string{"X-Robots-Tag": "noindex"}},
		{"denied header", 200, [][2]string{{"prerender-header", "Set-Cookie: a=b"}, {"prerender-header", "Content-Length: 1"}}, 200,
			map[string]string{"Set-Cookie": "", "Content-Length": ""}},
		{"header injection", 200, [][2]string{{"prerender-header", "X-A: b\r\nX-B: c"}, {"prerender-header", "Bad Name: x"}, {"prerender-header", "novalue"}}, 200,
			map[string]string{"X-A": "", "Bad Name": ""}},
		{"origin status kept", 404, [][2]string{{"prerender-header", "X-A: 1"}}, 404, map[string]string{"X-A": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h := applyMeta(base, tt.status, http.Header{}, tt.metas)
			if got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
			for k, v := range tt.wantHdrs {
				if h.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}
}

func TestApplyMetaReplacesHeader(t *testing.T) {
	h := http.Header{"X-A": {"old"}}
	_, h = applyMeta(nil, 200, h, [][2]string{{"prerender-header", "X-A: 1"}, {"prerender-header", "X-A: 2"}})
	if got := h.Values("X-A"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("X-A = %q, want [1 2]", got)
	}
}

func TestReservation(t *testing.T) {
	tests := []struct {
		free, pct           int
		reserved, available int
	}{
		{0, 50, 0, 0},
		{1, 50, 1, 0},
		{2, 50, 1, 1},
		{3, 50, 2, 1},
		{4, 50, 2, 2},
		{4, 0, 0, 4},
		{4, 100, 4, 0},
		{4, 150, 4, 0},
		{4, -5, 0, 4},
		{10, 25, 3, 7},
		{8, 25, 2, 6},
	}
	for _, tt := range tests {
		r, a := reservation(tt.free, tt.pct)
		if r != tt.reserved || a != tt.available {
			t.Errorf("reservation(%d, %d) = %d, %d; want %d, %d", tt.free, tt.pct, r, a, tt.reserved, tt.available)
		}
	}
}

func TestPoolClasses(t *testing.T) {
	p := newPool(2, 50)
	ctx := context.Background()
	// 2 free: 1 reserved, 1 for recache.
	s1, err := p.acquire(ctx, Recache)
	if err != nil {
		t.Fatalf("first recache: %v", err)
	}
	// 1 free, reserved: recache refused at once, online served.
	if _, err := p.acquire(ctx, Recache); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("second recache: %v, want ErrNoCapacity", err)
	}
	s2, err := p.acquire(ctx, Online)
	if err != nil {
		t.Fatalf("online: %v", err)
	}
	// 0 free: online waits until ctx ends.
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.acquire(tctx, Online); !errors.Is(err, ErrNoCapacity) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("online on a full pool: %v", err)
	}
	// A waiter gets a released slot.
	got := make(chan *slot)
	go func() {
		s, _ := p.acquire(ctx, Online)
		got <- s
	}()
	for {
		p.mu.Lock()
		n := len(p.waiters)
		p.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond) // until the goroutine waits
	}
	p.release(s1)
	if s := <-got; s != s1 {
		t.Fatalf("waiter got %p, want %p", s, s1)
	}
	if p.free() != 0 {
		t.Fatalf("free = %d, want 0", p.free())
	}
	// close wakes waiters with the close error; release after close drains.
	go func() {
		_, err := p.acquire(ctx, Online)
		got <- &slot{tab: nil}
		_ = err
	}()
	for {
		p.mu.Lock()
		n := len(p.waiters)
		p.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.close(ErrUnavailable)
	<-got
	if _, err := p.acquire(ctx, Online); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("acquire after close: %v", err)
	}
	p.release(s1)
	select {
	case <-p.idle:
		t.Fatal("idle before every slot came back")
	default:
	}
	p.release(s2)
	<-p.idle
}

func TestPublicAddr(t *testing.T) {
	tests := map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700:4700::1111": true,
		"127.0.0.1": false, "127.8.9.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false,
		"192.168.1.1": false, "169.254.169.254": false, "fe80::1": false, "fc00::1": false, "fd12::1": false,
		"100.64.0.1": false, "0.0.0.0": false, "::": false, "224.0.0.1": false, "ff02::1": false,
		"::ffff:127.0.0.1": false, "::ffff:169.254.169.254": false, "64:ff9b::a9fe:a9fe": false,
		"255.255.255.255": false, "198.18.0.1": false,
	}
	for s, want := range tests {
		if got := publicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", s, got, want)
		}
	}
	if err := refuseNonPublic("tcp4", "127.0.0.1:80", nil); !errors.Is(err, errPrivateAddress) {
		t.Errorf("refuseNonPublic(loopback) = %v", err)
	}
	if err := refuseNonPublic("tcp4", "8.8.8.8:443", nil); err != nil {
		t.Errorf("refuseNonPublic(public) = %v", err)
	}
}

func TestHostBlocked(t *testing.T) {
	tests := map[string]bool{
		"google-analytics.com": true, "www.google-analytics.com": true, "WWW.GoogleTagManager.com.": true,
		"connect.facebook.net": true, "facebook.net": false, "static.hotjar.com": true,
		"example.com": false, "notgoogle-analytics.com": false, "cdn.segment.com": true,
	}
	for h, want := range tests {
		if got := hostBlocked(defaultBlockHosts, h); got != want {
			t.Errorf("hostBlocked(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestDefaultUAs(t *testing.T) {
	d, m := defaultUAs("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36")
	if strings.Contains(d, "Headless") || !strings.Contains(d, "Chrome/156.0.0.0") {
		t.Errorf("desktop UA %q", d)
	}
	if !strings.Contains(m, "Mobile Safari") || !strings.Contains(m, "Chrome/156") {
		t.Errorf("mobile UA %q", m)
	}
}

func TestParsePublicURL(t *testing.T) {
	u, err := parsePublicURL("https://example.com/a?b=1#frag")
	if err != nil || u.String() != "https://example.com/a?b=1" {
		t.Errorf("got %v, %v", u, err)
	}
}

// The script margin holds after a module script and after a classic one
// that arrived once the document had loaded; a classic script that
// arrived before the load has run by then and holds nothing.
func TestScriptMargin(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const d, scriptD = 25 * time.Millisecond, 50 * time.Millisecond
	type req struct {
		module      bool
		start, done int
		bytes       int64
		notModified bool
	}
	for _, tc := range []struct {
		name   string
		reqs   []req
		loaded int // ms; -1: not known
		want   int // first ms at which settled
	}{
		{"classic before the load", []req{{false, 0, 10, 0, false}}, 20, 35},
		{"classic, load not known", []req{{false, 0, 10, 0, false}}, -1, 60},
		{"classic after the load", []req{{false, 15, 30, 0, false}}, 20, 80},
		{"classic at the load", []req{{false, 0, 20, 0, false}}, 20, 70},
		{"module before the load", []req{{true, 0, 10, 0, false}}, 20, 60},
		{"module import() after the load", []req{{false, 0, 10, 0, false}, {true, 25, 30, 0, false}}, 20, 80},
		{"not a script", nil, 20, 25},
		// Put off by the script's size: 200 ms a MiB, at most 250 ms;
		// 50 ms for a kept copy (304).
		{"module of 512 KiB", []req{{true, 0, 10, 512 << 10, false}}, 20, 160},
		{"module of 4 MiB", []req{{true, 0, 10, 4 << 20, false}}, 20, 310},
		{"module kept (304)", []req{{true, 0, 10, 0, true}}, 20, 110},
		{"large classic before the load", []req{{false, 0, 10, 4 << 20, false}}, 20, 35},
		{"large classic after the load", []req{{false, 25, 30, 512 << 10, false}}, 20, 180},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &renderState{inflight: map[proto.FetchRequestID]requestKind{}}
			st.started("doc", proto.NetworkResourceTypeDocument, false, at(0))
			st.finished("doc", at(0))
			for i, r := range tc.reqs {
				id := proto.FetchRequestID(fmt.Sprint(i))
				st.started(id, proto.NetworkResourceTypeScript, r.module, at(r.start))
				st.sized(id, r.bytes, r.notModified)
				st.finished(id, at(r.done))
			}
			if tc.loaded >= 0 {
				st.loaded(at(tc.loaded))
			}
			got := -1
			for ms := 0; ms <= 400; ms++ {
				if st.settled(at(ms), d, scriptD) {
					got = ms
					break
				}
			}
			if got != tc.want {
				t.Errorf("settled from %d ms, want %d", got, tc.want)
			}
		})
	}
}

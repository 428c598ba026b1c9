package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoadMixed runs a short, bounded load of cache hits, misses (renders)
// and people through one instance, then checks that memory stayed bounded
// and that nothing leaked: goroutines settle back, and after SIGTERM no
// process below prism is left.
func TestLoadMixed(t *testing.T) {
	origin := newOrigin(t)
	conf := newConf(t, origin.URL)
	p := startPrism(t, conf)
	for i := range 5 {
		p.Get(fmt.Sprintf("/hot-%d", i), desktopBot)
	}
	noRedirect.Transport.(*http.Transport).CloseIdleConnections()
	baseGoroutines := p.metric("go_goroutines")

	const (
		workers  = 6
		duration = 8 * time.Second
		maxReqs  = 3000 // per worker; the loop also ends at duration
	)
	var (
		wg       sync.WaitGroup
		bad      atomic.Int64
		requests atomic.Int64
		maxRSS   atomic.Int64
	)
	deadline := time.Now().Add(duration)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxReqs && time.Now().Before(deadline); i++ {
				var r Response
				switch {
				case i%10 == 0:
					r = p.Get(fmt.Sprintf("/cold-%d-%d", w, i), desktopBot)
				case i%10 == 1:
					r = p.Get(fmt.Sprintf("/person-%d", i), person)
				default:
					r = p.Get(fmt.Sprintf("/hot-%d", i%5), desktopBot)
				}
				requests.Add(1)
				if r.Status != http.StatusOK {
					bad.Add(1)
				}
				if i%20 == 0 {
					if rss := rssBytes(p.Pid()); rss > maxRSS.Load() {
						maxRSS.Store(rss)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests, %d not 200, prism max RSS %d MiB (memory_mb 64)", requests.Load(), bad.Load(), maxRSS.Load()>>20)
	if bad.Load() > 0 {
		t.Errorf("%d of %d requests were not 200", bad.Load(), requests.Load())
	}
	if limit := int64(512 << 20); maxRSS.Load() > limit {
		t.Errorf("prism RSS reached %d MiB, want < %d MiB with memory_mb = 64", maxRSS.Load()>>20, limit>>20)
	}

	// Goroutines settle back once the clients' connections are closed and
	// the renders are done.
	noRedirect.Transport.(*http.Transport).CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	var now float64
	waitFor(t, 15*time.Second, "goroutines to settle after the load", func() bool {
		now = p.metric("go_goroutines")
		return now <= baseGoroutines+10
	})

	pids := descendants(p.Pid())
	if err, _ := p.Stop(); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}
	waitFor(t, 5*time.Second, "every process below prism to exit", func() bool {
		for _, pid := range pids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// metric reads one unlabelled metric from the admin /metrics.
func (p *Prism) metric(name string) float64 {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.AdminURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+p.Conf.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				p.t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	p.t.Fatalf("metric %s not exported", name)
	return 0
}

// rssBytes is the resident memory of pid, from /proc.
func rssBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

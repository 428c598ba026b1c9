package prerender

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSweepStaleProfiles(t *testing.T) {
	parent := t.TempDir()
	host, _ := os.Hostname()
	now := time.Now()
	mk := func(name, lock string, age time.Duration) string {
		dir := filepath.Join(parent, name)
		if err := os.MkdirAll(filepath.Join(dir, "Default"), 0o700); err != nil {
			t.Fatal(err)
		}
		if lock != "" {
			if err := os.Symlink(lock, filepath.Join(dir, "SingletonLock")); err != nil {
				t.Fatal(err)
			}
		}
		old := now.Add(-age)
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// A pid that is certainly gone: beyond the kernel's pid range.
	dead := mk(profilePrefix+"dead", host+"-"+strconv.Itoa(1<<22+1), 0)
	live := mk(profilePrefix+"live", host+"-"+strconv.Itoa(os.Getpid()), time.Hour)
	otherHost := mk(profilePrefix+"other", "elsewhere-"+strconv.Itoa(1<<22+1), time.Hour)
	lockOld := mk(profilePrefix+"nolock-old", "", time.Hour)
	lockNew := mk(profilePrefix+"nolock-new", "", time.Minute)
	unrelated := mk("someone-else", "", time.Hour)

	if n := sweepStaleProfiles(parent, now); n != 2 {
		t.Errorf("removed %d profiles, want 2", n)
	}
	for dir, want := range map[string]bool{dead: false, lockOld: false, live: true, otherHost: true, lockNew: true, unrelated: true} {
		_, err := os.Stat(dir)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", filepath.Base(dir), got, want)
		}
	}
}

// groupMemory counts shared pages once: the PSS of this process is at most
// its RSS, and reading it works here (Linux 4.14+).
func TestProcessPSS(t *testing.T) {
	pss, ok := processPSS(os.Getpid())
	if !ok || pss <= 0 {
		t.Fatalf("processPSS = %d, %v", pss, ok)
	}
	// RSS from the same kind of snapshot, taken after: the process only
	// grows meanwhile (the stat file's RSS, read separately, can lag).
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	var rss int64
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			rss = kb << 10
		}
	}
	if pss > rss+(64<<20) { // slack for what this process allocates between the two reads
		t.Errorf("PSS %d > RSS %d", pss, rss)
	}
	if _, ok := processPSS(-1); ok {
		t.Error("processPSS of no process succeeded")
	}
}

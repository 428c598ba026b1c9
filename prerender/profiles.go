package prerender

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profilePrefix names the per-launch browser profile directories.
const profilePrefix = "prism-chromium-"

// lockless profiles younger than this may belong to a browser being launched
// right now by another PRISM, so the sweep leaves them alone.
const sweepMinAge = 10 * time.Minute

// sweepStaleProfiles removes profile directories under parent left by
// browsers that are gone: PRISM removes its profiles on exit, but not when it
// is killed. Chromium's SingletonLock symlink ("host-pid") tells whether the
// owner still runs; a profile without one is removed once it is old. It
// returns how many it removed.
func sweepStaleProfiles(parent string, now time.Time) int {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return 0
	}
	host, _ := os.Hostname()
	n := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), profilePrefix) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		if !staleProfile(dir, host, now) {
			continue
		}
		if os.RemoveAll(dir) == nil {
			n++
		}
	}
	return n
}

func staleProfile(dir, host string, now time.Time) bool {
	target, err := os.Readlink(filepath.Join(dir, "SingletonLock"))
	if err != nil {
		info, err := os.Stat(dir)
		return err == nil && now.Sub(info.ModTime()) > sweepMinAge
	}
	i := strings.LastIndexByte(target, '-')
	if i < 0 || target[:i] != host {
		return false // another machine's profile on shared storage, or unknown format
	}
	pid, err := strconv.Atoi(target[i+1:])
	if err != nil || pid <= 0 {
		return false
	}
	return !running(pid)
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	f := statFields(pid)
	return len(f) == 0 || f[0] != "Z" // unreadable: assume it runs
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which is in parentheses and may hold spaces): state, ppid, pgrp, ...
// It returns nil when the process is gone or the file is unreadable.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// groupStats returns the /proc stat fields (after the command name) of
// every process in group pgid, by pid.
func groupStats(pgid int) map[int][]string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[int][]string{}
	g := strconv.Itoa(pgid)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 2 && f[2] == g { // state ppid pgrp
			out[pid] = f
		}
	}
	return out
}

// browserCPU is the CPU time the processes of group pgid have used (and
// their reaped children).
func browserCPU(pgid int) time.Duration {
	var total time.Duration
	for _, f := range groupStats(pgid) {
		total += statCPU(f)
	}
	return total
}

// statCPU is the CPU time in a process's stat fields (statFields): its
// own and its reaped children's, user and system.
func statCPU(f []string) time.Duration {
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, s := range f[11:15] { // utime stime cutime cstime
		n, _ := strconv.ParseInt(s, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

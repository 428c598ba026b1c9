package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// runTestCommand runs the prism command line with args; serve records the
// configuration path it was given instead of starting a server.
func runTestCommand(t *testing.T, args ...string) (code int, stdout, stderr, served string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &command{
		stdout: &out, stderr: &errOut,
		getenv: func(string) string { return "" },
		serve: func(p string) error {
			served = p
			if p == "fail.toml" {
				return errors.New("boom")
			}
			return nil
		},
		buildInfo: func() *debug.BuildInfo {
			return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/prismproxy/prism", Version: "(devel)"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
		},
		chromeTimeout: 10 * time.Second,
	}
	code = c.run(args)
	return code, out.String(), errOut.String(), served
}

var subcommands = []string{"serve", "check", "version", "help", "purge", "warmup"}

func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"-help"}, {"serve", "-h"}, {"-config", "x.toml", "-h"}, {"check", "--help"}, {"version", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr, served := runTestCommand(t, args...)
			if code != exitOK {
				t.Fatalf("exit = %d, want 0 (stderr %q)", code, stderr)
			}
			if served != "" {
				t.Fatalf("help started the server on %q", served)
			}
			for _, sub := range subcommands {
				if !strings.Contains(stdout, "\n  "+sub+" ") {
					t.Errorf("help does not list %q:\n%s", sub, stdout)
				}
			}
		})
	}
	// The admin commands' own usage, with their flags.
	for _, args := range [][]string{{"help", "purge"}, {"help", "warmup"}, {"purge", "-h"}, {"warmup", "--help"}} {
		code, stdout, _, _ := runTestCommand(t, args...)
		if code != exitOK || !strings.Contains(stdout, "--sitemap") || !strings.Contains(stdout, "--pattern") {
			t.Errorf("%q: exit %d, stdout %q; want 0 and the purge/warmup usage", args, code, stdout)
		}
	}
}

func TestCommandUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"Serve"}, {"version2"}, {"help", "nope"}, {"serve", "extra"}, {"serve", "-nope"}, {"-config"}, {"check", "-config", "a", "b"}, {"version", "--wat"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr, served := runTestCommand(t, args...)
			if code != exitUsage {
				t.Fatalf("exit = %d, want %d (stderr %q)", code, exitUsage, stderr)
			}
			if served != "" {
				t.Fatalf("a usage error started the server on %q", served)
			}
			if !strings.Contains(stderr, "usage: prism") {
				t.Fatalf("stderr does not show the usage: %q", stderr)
			}
		})
	}
}

func TestCommandServeDefault(t *testing.T) {
	tests := []struct {
		args     []string
		wantPath string
		wantCode int
	}{
		{nil, "prism.toml", exitOK},
		{[]string{"-config", "a.toml"}, "a.toml", exitOK},
		{[]string{"--config=b.toml"}, "b.toml", exitOK},
		{[]string{"serve"}, "prism.toml", exitOK},
		{[]string{"serve", "-config", "c.toml"}, "c.toml", exitOK},
		{[]string{"serve", "-config", "fail.toml"}, "fail.toml", exitFail},
	}
	for _, tt := range tests {
		code, _, stderr, served := runTestCommand(t, tt.args...)
		if code != tt.wantCode || served != tt.wantPath {
			t.Errorf("%q: exit %d, served %q; want %d, %q (stderr %q)", tt.args, code, served, tt.wantCode, tt.wantPath, stderr)
		}
	}
}

func TestCommandVersion(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3-4-gabcdef-dirty"
	code, stdout, stderr, served := runTestCommand(t, "version")
	if code != exitOK {
		t.Fatalf("exit = %d (stderr %q)", code, stderr)
	}
	if code, out, _, served2 := runTestCommand(t, "--version"); code != exitOK || out != stdout || served != "" || served2 != "" {
		t.Errorf("--version: exit %d, output %q; want version's", code, out)
	}
	for _, want := range []string{"prism v1.2.3-4-gabcdef-dirty\n", "module: github.com/prismproxy/prism (devel)\n",
		"revision: 0123abcd (2026-12-01T00:00:00Z, modified)\n", "go: go1.26.8 ", "chromium: "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("version output lacks %q:\n%s", want, stdout)
		}
	}
	// Without a build-time version the module version stands in; a
	// browser that does not exist is reported, not an error.
	version = ""
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prism.toml")
	writeFile(t, cfg, validConfig+"\n[render]\nchrome_path = \"/nonexistent/chromium\"\n")
	code, stdout, _, _ = runTestCommand(t, "version", "-config", cfg)
	if code != exitOK || !strings.HasPrefix(stdout, "prism devel\n") || !strings.Contains(stdout, "chromium: not found: ") {
		t.Errorf("exit %d, output:\n%s", code, stdout)
	}
}

func TestBuildLines(t *testing.T) {
	got := buildLines("", &debug.BuildInfo{Main: debug.Module{Path: "github.com/prismproxy/prism", Version: "v0.3.0"}})
	if !strings.HasPrefix(got, "prism v0.3.0\n") || !strings.Contains(got, "revision: unknown") {
		t.Errorf("module version: %q", got)
	}
	if got := buildLines("", nil); !strings.HasPrefix(got, "prism devel\n") {
		t.Errorf("no build info: %q", got)
	}
}

func TestChromeVersion(t *testing.T) {
	dir := t.TempDir()
	// A browser that never answers is cut off by the timeout.
	hang := filepath.Join(dir, "hang")
	writeFile(t, hang, "#!/bin/sh\nexec sleep 60\n")
	os.Chmod(hang, 0o755)
	start := time.Now()
	got := chromeVersion(hang, 200*time.Millisecond)
	if !strings.Contains(got, "did not answer") || time.Since(start) > 5*time.Second {
		t.Errorf("hanging browser: %q after %s", got, time.Since(start))
	}
	ok := filepath.Join(dir, "chromium")
	writeFile(t, ok, "#!/bin/sh\necho 'Chromium 999.0.1.2 built on Test'\necho second line\n")
	os.Chmod(ok, 0o755)
	if got := chromeVersion(ok, 5*time.Second); got != "Chromium 999.0.1.2 built on Test ("+ok+")" {
		t.Errorf("got %q", got)
	}
	fail := filepath.Join(dir, "fail")
	writeFile(t, fail, "#!/bin/sh\nexit 3\n")
	os.Chmod(fail, 0o755)
	if got := chromeVersion(fail, 5*time.Second); !strings.Contains(got, "exit status 3") {
		t.Errorf("failing browser: %q", got)
	}
}

// validConfig is a minimal configuration that passes validation.
const validConfig = `
[[hosts]]
id = 1
name = "example.com"
origin = "http://127.0.0.1:3000"

  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["@crawlers"]
  width = 1366
  height = 768
`

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCommandCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	writeFile(t, good, validConfig)
	code, stdout, stderr, _ := runTestCommand(t, "check", "-config", good)
	if code != exitOK || stdout != "ok\n" {
		t.Fatalf("valid config: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The example config shipped with PRISM is valid.
	if code, stdout, stderr, _ := runTestCommand(t, "check", "-config", "prism.example.toml"); code != exitOK || stdout != "ok\n" {
		t.Fatalf("prism.example.toml: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, `[server]
listen = ":4000"
lisen = ":4001"

[render]
tabs = -1
timeout = "15 seconds"

[cache]
memory_mb = "lots"
`+validConfig+`
  [[hosts.dimensions]]
  id = 1
  name = "desktop"
  match_ua = ["@nosuchgroup", "re:("]
`)
	code, stdout, stderr, _ = runTestCommand(t, "check", "-config", bad)
	if code != exitFail || stdout != "" {
		t.Fatalf("invalid config: exit %d, stdout %q; want 1 and nothing on stdout", code, stdout)
	}
	// Every problem, each with its key and its line.
	for _, want := range []string{"lisen", "line 3", "render.tabs", "render.timeout", "line 7", "cache.memory_mb", "line 10",
		"@nosuchgroup", "match_ua[1]: bad regular expression", "line 27"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("problems lack %q:\n%s", want, stderr)
		}
	}

	for _, tt := range []struct{ name, data string }{
		{"syntax", "[server\nlisten = 1\n"},
		{"no hosts", "[server]\nlisten = \":4000\"\n"},
		{"empty", ""},
	} {
		p := filepath.Join(dir, tt.name+".toml")
		writeFile(t, p, tt.data)
		if code, stdout, stderr, _ := runTestCommand(t, "check", "-config", p); code != exitFail || stdout != "" || stderr == "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and the problems on stderr", tt.name, code, stdout, stderr)
		}
	}
	if code, _, stderr, _ := runTestCommand(t, "check", "-config", filepath.Join(dir, "missing.toml")); code != exitFail || !strings.Contains(stderr, "missing.toml") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}

// TestBinary builds the real binary with a version set through -ldflags
// and runs its subcommands as an operator would.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "prism")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Env = append(os.Environ(), "PRISM_ADMIN_TOKEN=", "PRISM_INTERNAL_AUTH_KEY=")
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%q: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	if code, out, _ := run("version"); code != 0 || !strings.HasPrefix(out, "prism v9.9.9-test\n") ||
		!strings.Contains(out, "module: github.com/prismproxy/prism") || !strings.Contains(out, "chromium: ") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	if code, out, _ := run("--help"); code != 0 || !strings.Contains(out, "  check ") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
	if code, _, errOut := run("bogus"); code != 2 || !strings.Contains(errOut, `unknown command "bogus"`) {
		t.Errorf("bogus: exit %d\n%s", code, errOut)
	}
	good := filepath.Join(dir, "good.toml")
	writeFile(t, good, validConfig)
	if code, out, errOut := run("check", "-config", good); code != 0 || out != "ok\n" {
		t.Errorf("check good: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, "[render]\ntabs = 0\nwrokers = 4\n"+validConfig)
	if code, out, errOut := run("check", "-config", bad); code != 1 || out != "" || !strings.Contains(errOut, "wrokers") || !strings.Contains(errOut, "render.tabs") {
		t.Errorf("check bad: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A config that fails makes "prism -config FILE" (serve) exit 1 at once.
	if code, _, errOut := run("-config", bad); code != 1 || !strings.Contains(errOut, "wrokers") {
		t.Errorf("serve bad config: exit %d, stderr %q", code, errOut)
	}
}

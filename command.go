package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prismproxy/prism/config"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// version is PRISM's release, set at build time:
// go build -ldflags "-X main.version=$(git describe --tags --always --dirty)".
// Empty: the module version from the build info, else "devel".
var version string

const usage = `usage: prism [COMMAND] [flags]

commands:
  serve    run the server (the default: "prism -config FILE" serves too)
             -config FILE   configuration file (default prism.toml)
  check    validate a configuration file; print every problem with its key and line
             -config FILE   configuration file (default prism.toml)
  version  print PRISM's version, its build (module, VCS revision) and Chromium's version
           (also --version)
             -config FILE   read render.chrome_path from this file (default: find Chromium)
  purge    purge cached pages through a running instance's admin API
  warmup   warm the cache from a sitemap through a running instance's admin API
  help     print this help; "prism help purge" or "prism help warmup" for their flags

exit status: 0 success; 1 failure (check: the configuration has problems); 2 usage error
`

// command is one run of the prism binary: its streams, its environment and
// the server it starts. Tests replace serve so that no server starts.
type command struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// serve runs the server on the configuration file until it stops.
	serve func(cfgPath string) error
	// buildInfo returns the binary's build information (nil: none).
	buildInfo func() *debug.BuildInfo
	// chromeTimeout bounds "chromium --version" (zero: 5s).
	chromeTimeout time.Duration
}

// run dispatches args (without the program name) to a subcommand and
// returns the process exit status.
func (c *command) run(args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelpFlag(args[0]) && !isVersionFlag(args[0]) {
		return c.serveCmd(args) // "prism" and "prism -config FILE" serve
	}
	switch args[0] {
	case "serve":
		return c.serveCmd(args[1:])
	case "check":
		return c.check(args[1:])
	case "version", "-version", "--version":
		return c.versionCmd(args[1:])
	case "purge", "warmup":
		if hasHelpFlag(args[1:]) {
			fmt.Fprint(c.stdout, cliUsage)
			return exitOK
		}
		return runCLI(args, c.stdout, c.stderr, c.getenv)
	case "help", "-h", "-help", "--help":
		return c.help(args[1:])
	}
	fmt.Fprintf(c.stderr, "prism: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

func (c *command) help(args []string) int {
	if len(args) > 0 && (args[0] == "purge" || args[0] == "warmup") {
		fmt.Fprint(c.stdout, cliUsage)
		return exitOK
	}
	if len(args) > 0 && !isCommand(args[0]) {
		fmt.Fprintf(c.stderr, "prism help: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	fmt.Fprint(c.stdout, usage)
	return exitOK
}

func isCommand(s string) bool {
	switch s {
	case "serve", "check", "version", "purge", "warmup", "help":
		return true
	}
	return false
}

func isHelpFlag(s string) bool    { return s == "-h" || s == "-help" || s == "--help" }
func isVersionFlag(s string) bool { return s == "-version" || s == "--version" }

// hasHelpFlag reports whether args ask for help before any "--".
func hasHelpFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpFlag(a) {
			return true
		}
	}
	return false
}

// flagSet returns a flag set for subcommand name that prints the usage on
// -h (exit 0) and on a bad flag (exit 2), and a -config flag.
func (c *command) flagSet(name, defConfig string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("prism "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := fs.String("config", defConfig, "configuration file")
	return fs, cfg
}

// parse parses args into fs; on failure it returns the exit status (help:
// 0 with the usage on stdout; a bad flag or a positional argument: 2).
func (c *command) parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return exitOK, false
		}
		fmt.Fprintf(c.stderr, "%s: %v\n\n%s", fs.Name(), err, usage)
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "%s: unexpected argument %q\n\n%s", fs.Name(), fs.Arg(0), usage)
		return exitUsage, false
	}
	return 0, true
}

func (c *command) serveCmd(args []string) int {
	fs, cfgPath := c.flagSet("serve", "prism.toml")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if err := c.serve(*cfgPath); err != nil {
		fmt.Fprintln(c.stderr, "prism:", err)
		return exitFail
	}
	return exitOK
}

// check loads and validates a configuration as serve does, and prints every
// problem (exit 1) or "ok" (exit 0). Warnings, and a browser that cannot be
// found on this machine, are printed but do not fail the check: the file
// may be checked on another machine than the one that runs it.
func (c *command) check(args []string) int {
	fs, cfgPath := c.flagSet("check", "prism.toml")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	cfg, err := c.loadConfig(*cfgPath)
	if err == nil {
		if _, serr := site.New(cfg.SiteOptions()); serr != nil {
			err = fmt.Errorf("config %s: hosts: %w", *cfgPath, serr)
		}
	}
	if err != nil {
		fmt.Fprintln(c.stderr, err)
		return exitFail
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(c.stderr, "warning:", w)
	}
	if _, err := prerender.FindChrome(cfg.Render.ChromePath); err != nil {
		fmt.Fprintln(c.stderr, "warning: render.chrome_path:", err)
	}
	fmt.Fprintln(c.stdout, "ok")
	return exitOK
}

func (c *command) loadConfig(path string) (*config.Config, error) {
	return config.LoadWith(path, func(k string) (string, bool) {
		v := c.getenv(k)
		return v, v != ""
	})
}

// versionCmd prints PRISM's version, its build and Chromium's version.
func (c *command) versionCmd(args []string) int {
	fs, cfgPath := c.flagSet("version", "")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	chromePath := ""
	if *cfgPath != "" {
		cfg, err := c.loadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(c.stderr, err)
			return exitFail
		}
		chromePath = cfg.Render.ChromePath
	}
	var bi *debug.BuildInfo
	if c.buildInfo != nil {
		bi = c.buildInfo()
	}
	fmt.Fprint(c.stdout, buildLines(version, bi))
	timeout := c.chromeTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	fmt.Fprintf(c.stdout, "chromium: %s\n", chromeVersion(chromePath, timeout))
	return exitOK
}

// buildLines describes the build: the release (set at build time, else the
// module version), the module, the VCS revision, time and state, and Go.
func buildLines(release string, bi *debug.BuildInfo) string {
	var b strings.Builder
	modVersion, module := "", "github.com/prismproxy/prism"
	settings := map[string]string{}
	goVersion := runtime.Version()
	if bi != nil {
		modVersion = bi.Main.Version
		if bi.Main.Path != "" {
			module = bi.Main.Path
		}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
	}
	if release == "" {
		release = modVersion
	}
	if release == "" || release == "(devel)" {
		release = "devel"
	}
	fmt.Fprintf(&b, "prism %s\n", release)
	if modVersion == "" {
		modVersion = "unknown"
	}
	fmt.Fprintf(&b, "module: %s %s\n", module, modVersion)
	if rev := settings["vcs.revision"]; rev != "" {
		state := "clean"
		if settings["vcs.modified"] == "true" {
			state = "modified"
		}
		fmt.Fprintf(&b, "revision: %s (%s, %s)\n", rev, settings["vcs.time"], state)
	} else {
		fmt.Fprintf(&b, "revision: unknown (not built from a VCS checkout)\n")
	}
	fmt.Fprintf(&b, "go: %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}

// chromeVersion runs the browser PRISM would launch with --version, bounded
// by timeout, and returns its first line and path, or why it has none.
func chromeVersion(path string, timeout time.Duration) string {
	bin, err := prerender.FindChrome(path)
	if err != nil {
		return "not found: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	// A child that keeps the pipe open must not hold us past the timeout.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Sprintf("%s did not answer --version within %s", bin, timeout)
		}
		return fmt.Sprintf("%s --version: %v", bin, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if len(line) > 200 {
		line = line[:200]
	}
	return fmt.Sprintf("%s (%s)", strings.TrimSpace(line), bin)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/prismproxy/prism/config"
)

// CLI exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the admin API refused, was unreachable, the warmup had errors, or a purge did not reach every live node
	exitUsage = 2
)

// Environment variables the admin CLI reads.
const (
	envAdminAddr  = "PRISM_ADMIN_ADDR"
	envAdminToken = "PRISM_ADMIN_TOKEN"
)

const cliUsage = `usage:
  prism purge  (--url URL | --pattern GLOB | --all)  [common flags]
  prism warmup --sitemap URL [--wait]                [common flags]
  prism warmup --wait | --status | --cancel          [common flags]

common flags:
  --admin ADDR    admin API address, host:port or URL (env PRISM_ADMIN_ADDR;
                  else admin.address from --config; else 127.0.0.1:4001)
  --token TOKEN   bearer token (env PRISM_ADMIN_TOKEN; else admin.bearer_token from --config)
  --config FILE   read admin.address and admin.bearer_token from this prism.toml
  --timeout DUR   per-request timeout (default 30s)

exit status: 0 success; 1 request failed, the warmup ended with errors, or (cluster
mode) a purge was not applied by every live node in time; 2 usage error
`

// runCLI runs the admin subcommands ("purge", "warmup") that talk to a
// running PRISM's admin API, and returns the process exit status.
func runCLI(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &adminCLI{stdout: stdout, stderr: stderr, getenv: getenv, poll: time.Second}
	return c.run(args)
}

// adminCLI holds one CLI invocation's streams and settings.
type adminCLI struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	poll           time.Duration // --wait polling interval

	base   string // admin API base URL, no trailing slash
	token  string
	client *http.Client
}

func (c *adminCLI) run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, cliUsage)
		return exitUsage
	}
	switch args[0] {
	case "purge":
		return c.purge(args[1:])
	case "warmup":
		return c.warmup(args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.stdout, cliUsage)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "prism: unknown command %q\n%s", args[0], cliUsage)
	return exitUsage
}

// commonFlags holds the flags every subcommand takes.
type commonFlags struct {
	admin, token, config string
	timeout              time.Duration
}

func (c *adminCLI) flagSet(name string, cf *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("prism "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, cliUsage) }
	fs.StringVar(&cf.admin, "admin", "", "admin API address")
	fs.StringVar(&cf.token, "token", "", "admin bearer token")
	fs.StringVar(&cf.config, "config", "", "prism.toml to read admin.address and admin.bearer_token from")
	fs.DurationVar(&cf.timeout, "timeout", 30*time.Second, "per-request timeout")
	return fs
}

// parse parses args and checks that no positional arguments are left.
func (c *adminCLI) parse(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

// setup resolves the admin address and token: flag, then environment, then
// the config file, then the default address.
func (c *adminCLI) setup(cf commonFlags) error {
	addr, token := cf.admin, cf.token
	if addr == "" {
		addr = c.getenv(envAdminAddr)
	}
	if token == "" {
		token = c.getenv(envAdminToken)
	}
	if cf.config != "" && (addr == "" || token == "") {
		cfg, err := config.LoadWith(cf.config, func(k string) (string, bool) {
			v := c.getenv(k)
			return v, v != ""
		})
		if err != nil {
			return fmt.Errorf("config %s: %w", cf.config, err)
		}
		if addr == "" {
			addr = cfg.Admin.Address
		}
		if token == "" {
			token = cfg.Admin.BearerToken
		}
	}
	if addr == "" {
		addr = "127.0.0.1:4001"
	}
	base, err := adminBaseURL(addr)
	if err != nil {
		return err
	}
	if cf.timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	c.base, c.token = base, token
	c.client = &http.Client{Timeout: cf.timeout}
	return nil
}

// adminBaseURL turns "host:port", ":port" or "http(s)://host:port" into a
// base URL; a wildcard listen address is reached on loopback.
func adminBaseURL(addr string) (string, error) {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("invalid admin address %q", addr)
		}
		return strings.TrimSuffix(u.String(), "/"), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("invalid admin address %q: want host:port or a URL", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func (c *adminCLI) purge(args []string) int {
	var cf commonFlags
	var u, pattern string
	var all bool
	fs := c.flagSet("purge", &cf)
	fs.StringVar(&u, "url", "", "purge one URL (a path on every host, or a full URL)")
	fs.StringVar(&pattern, "pattern", "", "purge URLs whose path matches a glob")
	fs.BoolVar(&all, "all", false, "purge the whole cache")
	if !c.parse(fs, args) {
		return exitUsage
	}
	n := 0
	for _, set := range []bool{u != "", pattern != "", all} {
		if set {
			n++
		}
	}
	if n != 1 {
		fmt.Fprintf(c.stderr, "prism purge: give exactly one of --url, --pattern, --all\n%s", cliUsage)
		return exitUsage
	}
	if err := c.setup(cf); err != nil {
		fmt.Fprintf(c.stderr, "prism purge: %v\n", err)
		return exitUsage
	}
	path, body := "/purge/all", any(nil)
	switch {
	case u != "":
		path, body = "/purge/url", map[string]string{"url": u}
	case pattern != "":
		path, body = "/purge/pattern", map[string]string{"pattern": pattern}
	}
	var resp struct {
		Purged      *bool `json:"purged"`
		PurgedCount *int  `json:"purged_count"`
		// Cluster mode only.
		NodesApplied *int `json:"nodes_applied"`
		NodesLive    *int `json:"nodes_live"`
		Pending      bool `json:"pending"`
	}
	if err := c.call(http.MethodPost, path, body, &resp); err != nil {
		fmt.Fprintf(c.stderr, "prism purge: %v\n", err)
		return exitFail
	}
	switch {
	case resp.Purged != nil:
		fmt.Fprintf(c.stdout, "purged: %t\n", *resp.Purged)
	case resp.PurgedCount != nil:
		fmt.Fprintf(c.stdout, "purged_count: %d\n", *resp.PurgedCount)
	}
	if resp.NodesApplied == nil || resp.NodesLive == nil {
		return exitOK // a single node
	}
	fmt.Fprintf(c.stdout, "nodes_applied: %d of %d live\n", *resp.NodesApplied, *resp.NodesLive)
	switch {
	case resp.Pending:
		fmt.Fprintf(c.stderr, "prism purge: Redis is unreachable: applied on the node that answered only; it reaches the other nodes when Redis is back\n")
		return exitFail
	case *resp.NodesApplied < *resp.NodesLive:
		fmt.Fprintf(c.stderr, "prism purge: %d of %d live nodes did not confirm the purge in time (they apply it when they catch up)\n",
			*resp.NodesLive-*resp.NodesApplied, *resp.NodesLive)
		return exitFail
	}
	return exitOK
}

// warmupState mirrors GET /warmup/status.
type warmupState struct {
	Status       string  `json:"status"`
	Total        int64   `json:"total"`
	Processed    int64   `json:"processed"`
	Errors       int64   `json:"errors"`
	ElapsedSecs  float64 `json:"elapsed_secs"`
	ErrorMessage *string `json:"error_message"`
	FailedURLs   []struct {
		URL       string `json:"url"`
		Dimension string `json:"dimension"`
		Status    int    `json:"status"`
		Reason    string `json:"reason"`
	} `json:"failed_urls"`
	Truncated bool `json:"truncated"`
}

// printFailures writes the failed URLs the admin API listed, one a line,
// and how many more failed; the text comes from sitemaps and origins, so
// control characters are replaced.
func (s warmupState) printFailures(w io.Writer) {
	clean := func(v string) string {
		return strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '?'
			}
			return r
		}, v)
	}
	for _, f := range s.FailedURLs {
		l := "  failed: " + clean(f.URL)
		if f.Dimension != "" {
			l += " (" + clean(f.Dimension) + ")"
		}
		if f.Status != 0 {
			l += fmt.Sprintf(" status %d", f.Status)
		}
		fmt.Fprintln(w, l+": "+clean(f.Reason))
	}
	if more := s.Errors - int64(len(s.FailedURLs)); more > 0 && len(s.FailedURLs) > 0 {
		fmt.Fprintf(w, "  ... and %d more failed (see the server log)\n", more)
	}
	if s.Truncated {
		fmt.Fprintln(w, "  truncated: the sitemaps list more URLs than warmup.max_urls")
	}
}

func (s warmupState) line() string {
	l := fmt.Sprintf("warmup %s: %d/%d processed, %d errors, %.1fs", s.Status, s.Processed, s.Total, s.Errors, s.ElapsedSecs)
	if s.ErrorMessage != nil {
		l += ": " + *s.ErrorMessage
	}
	return l
}

func (c *adminCLI) warmup(args []string) int {
	var cf commonFlags
	var sitemap string
	var wait, status, cancel bool
	fs := c.flagSet("warmup", &cf)
	fs.StringVar(&sitemap, "sitemap", "", "sitemap URL to warm the cache from")
	fs.BoolVar(&wait, "wait", false, "wait for the warmup to finish, printing progress")
	fs.BoolVar(&status, "status", false, "print the warmup status")
	fs.BoolVar(&cancel, "cancel", false, "cancel the running warmup")
	if !c.parse(fs, args) {
		return exitUsage
	}
	switch {
	case sitemap == "" && !wait && !status && !cancel:
		fmt.Fprintf(c.stderr, "prism warmup: give --sitemap URL, --wait, --status or --cancel\n%s", cliUsage)
		return exitUsage
	case cancel && (sitemap != "" || wait || status), status && (sitemap != "" || wait):
		fmt.Fprintf(c.stderr, "prism warmup: --cancel and --status go alone\n%s", cliUsage)
		return exitUsage
	}
	if err := c.setup(cf); err != nil {
		fmt.Fprintf(c.stderr, "prism warmup: %v\n", err)
		return exitUsage
	}
	switch {
	case cancel:
		if err := c.call(http.MethodPost, "/warmup/cancel", nil, nil); err != nil {
			fmt.Fprintf(c.stderr, "prism warmup: %v\n", err)
			return exitFail
		}
		fmt.Fprintln(c.stdout, "warmup cancelled")
		return exitOK
	case status:
		var st warmupState
		if err := c.call(http.MethodGet, "/warmup/status", nil, &st); err != nil {
			fmt.Fprintf(c.stderr, "prism warmup: %v\n", err)
			return exitFail
		}
		fmt.Fprintln(c.stdout, st.line())
		return exitOK
	}
	if sitemap != "" {
		if err := c.call(http.MethodPost, "/warmup", map[string]string{"sitemap_url": sitemap}, nil); err != nil {
			fmt.Fprintf(c.stderr, "prism warmup: %v\n", err)
			return exitFail
		}
		fmt.Fprintf(c.stdout, "warmup started: %s\n", sitemap)
	}
	if !wait {
		return exitOK
	}
	return c.waitWarmup()
}

// waitWarmup polls /warmup/status until the warmup is no longer running,
// printing a line whenever the progress changes.
func (c *adminCLI) waitWarmup() int {
	const maxFailures = 5
	last, failures := "", 0
	for {
		var st warmupState
		if err := c.call(http.MethodGet, "/warmup/status", nil, &st); err != nil {
			failures++
			fmt.Fprintf(c.stderr, "prism warmup: %v\n", err)
			var ae *apiError
			if errors.As(err, &ae) || failures >= maxFailures {
				return exitFail
			}
		} else {
			failures = 0
			if l := st.line(); l != last {
				fmt.Fprintln(c.stdout, l)
				last = l
			}
			switch st.Status {
			case "completed":
				st.printFailures(c.stdout)
				if st.Errors > 0 || st.ErrorMessage != nil {
					return exitFail
				}
				return exitOK
			case "idle":
				fmt.Fprintln(c.stderr, "prism warmup: no warmup has run")
				return exitFail
			}
		}
		time.Sleep(c.poll)
	}
}

// apiError is a non-2xx answer of the admin API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("admin API: %d %s: %s", e.status, http.StatusText(e.status), e.msg)
}

// call sends one request to the admin API and decodes a 2xx JSON answer into
// out (when non-nil).
func (c *adminCLI) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin API: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &apiError{status: resp.StatusCode, msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin API: decode answer: %w", err)
		}
	}
	return nil
}

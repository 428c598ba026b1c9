// Command bareproxy is the pass-through baseline: a bare
// httputil.ReverseProxy in front of an origin, with the same transport
// settings PRISM uses (so idle connections are reused the same way; the
// default transport keeps only 2 per host, which would handicap the baseline).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/prismproxy/prism/bench/internal/serve"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	origin := flag.String("origin", "", "origin base URL (required)")
	flag.Parse()
	if err := run(*addr, *origin); err != nil {
		fmt.Fprintln(os.Stderr, "bareproxy:", err)
		os.Exit(1)
	}
}

func run(addr, origin string) error {
	ou, err := url.Parse(origin)
	if err != nil || ou.Host == "" {
		return fmt.Errorf("bad -origin %q", origin)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(ou)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening http://%s\n", ln.Addr())
	return serve.Until(ln, rp)
}

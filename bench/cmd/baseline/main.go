// Command baseline is the minimal net/http server the hit benchmarks compare
// PRISM against: it sends fixed bytes from memory, the gzip bytes when the
// request's Accept-Encoding mentions gzip and the plain bytes otherwise.
// The bench scripts give it the very bytes PRISM sends for the page, so both
// responses have the same size.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prismproxy/prism/bench/internal/serve"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	plainPath := flag.String("plain", "", "file with the identity body (required)")
	gzPath := flag.String("gzip", "", "file with the gzip body (empty: always send plain)")
	flag.Parse()
	if err := run(*addr, *plainPath, *gzPath); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(addr, plainPath, gzPath string) error {
	plain, err := os.ReadFile(plainPath)
	if err != nil {
		return err
	}
	var gz []byte
	if gzPath != "" {
		if gz, err = os.ReadFile(gzPath); err != nil {
			return err
		}
	}
	plainLen, gzLen := strconv.Itoa(len(plain)), strconv.Itoa(len(gz))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", "text/html; charset=utf-8")
		if gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			hd.Set("Content-Encoding", "gzip")
			hd.Set("Content-Length", gzLen)
			w.Write(gz)
			return
		}
		hd.Set("Content-Length", plainLen)
		w.Write(plain)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening http://%s plain=%d gzip=%d\n", ln.Addr(), len(plain), len(gz))
	return serve.Until(ln, h)
}

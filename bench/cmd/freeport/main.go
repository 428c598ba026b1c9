// Command freeport prints N loopback addresses whose ports were free just
// now, one per line, for the bench scripts' PRISM configs.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
)

func main() {
	n := flag.Int("n", 1, "addresses to print")
	flag.Parse()
	var ls []net.Listener
	for range *n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "freeport:", err)
			os.Exit(1)
		}
		ls = append(ls, l) // held until all are chosen, so they differ
		fmt.Println(l.Addr())
	}
	for _, l := range ls {
		l.Close()
	}
}

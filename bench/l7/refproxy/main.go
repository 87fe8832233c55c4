// Command refproxy is the L7 benchmark's reference row: a plain
// net/http/httputil.ReverseProxy (Rewrite, X-Forwarded-* set, round-robin
// over the backends) with a transport that keeps enough idle connections per
// backend. It is what a Go proxy costs before any tuning.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:39180", "address to listen on")
	backends := flag.String("backends", "127.0.0.1:39181,127.0.0.1:39182", "comma-separated backend host:port list")
	flag.Parse()

	var targets []*url.URL
	for _, b := range strings.Split(*backends, ",") {
		u, err := url.Parse("http://" + b)
		if err != nil {
			fmt.Fprintf(os.Stderr, "refproxy: backend %q: %v\n", b, err)
			os.Exit(2)
		}
		targets = append(targets, u)
	}
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(targets[(next.Add(1)-1)%uint64(len(targets))])
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: %v\n", err)
		os.Exit(1)
	}
}

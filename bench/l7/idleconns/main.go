// Command idleconns opens keep-alive connections to an HTTP/1.1 server,
// sends one GET on each and reads its answer, then leaves them all idle
// until its standard input ends, so that the server's resident memory per
// idle connection can be measured (scripts/bench.d/62-l7-idle.sh).
//
// Output: "ready N" once N connections are idle, or an error.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:29186", "server host:port")
	n := flag.Int("conns", 10000, "connections to open")
	workers := flag.Int("workers", 64, "connections being set up at once")
	sources := flag.Int("sources", 4, "source addresses 127.0.0.1 to 127.0.0.N (a loopback address has about 28,000 ports)")
	flag.Parse()

	conns := make([]net.Conn, *n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= *n || failed.Load() != nil {
					return
				}
				c, err := oneRequest(*addr, net.IPv4(127, 0, 0, byte(1+i%*sources)))
				if err != nil {
					failed.Store(fmt.Errorf("connection %d: %w", i, err))
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", *n)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// oneRequest opens a connection, sends a GET and reads the whole answer
// without leaving a goroutine or buffer behind on this side.
func oneRequest(addr string, src net.IP) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil && (resp.StatusCode != 200 || resp.Close || br.Buffered() > 0) {
		err = fmt.Errorf("status %d, close %v, %d stray bytes", resp.StatusCode, resp.Close, br.Buffered())
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

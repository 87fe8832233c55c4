// Command loadgen is the L7 benchmark's open-loop load generator (wrk only
// runs closed loops). It sends GET requests at a fixed rate over a pool of
// HTTP/1.1 keep-alive connections and measures each request's latency from
// the moment it was scheduled, not from when a connection became free, so a
// stalled server shows up in the tail instead of slowing the load down
// (coordinated omission).
//
// Output, one line: rate=R sent=N ok=N errors=N p50_us=X p90_us=X p99_us=X p999_us=X max_us=X
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:39180", "server host:port")
	path := flag.String("path", "/", "request path")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "connections (requests in flight at most)")
	flag.Parse()
	if *rate <= 0 || *conns <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: rate, conns and duration must be positive")
		os.Exit(2)
	}

	total := int(*rate * duration.Seconds())
	queue := make(chan time.Time, total)
	request := []byte("GET " + *path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: xlb-loadgen\r\n\r\n")

	type result struct {
		lat    []time.Duration
		errors int
	}
	results := make([]result, *conns)
	var wg sync.WaitGroup
	for i := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			var c net.Conn
			var br *bufio.Reader
			for sched := range queue {
				if c == nil {
					var err error
					if c, err = net.Dial("tcp", *addr); err != nil {
						r.errors++
						continue
					}
					br = bufio.NewReader(c)
				}
				ok := false
				if _, err := c.Write(request); err == nil {
					status, keep, err := readResponse(br)
					ok = err == nil && status == 200 && keep
				}
				if !ok {
					r.errors++
					c.Close()
					c = nil
					continue
				}
				r.lat = append(r.lat, time.Since(sched))
			}
			if c != nil {
				c.Close()
			}
		}()
	}

	// The schedule: request i is due at start + i/rate. The dispatcher
	// wakes every 250µs and queues all requests that are due, so latencies
	// include up to 250µs (125µs on average) of its tick, for every server
	// alike.
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	for i := 0; i < total; {
		now := time.Now()
		for ; i < total; i++ {
			due := start.Add(time.Duration(i) * interval)
			if due.After(now) {
				break
			}
			queue <- due
		}
		time.Sleep(250 * time.Microsecond)
	}
	close(queue)
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	errors := 0
	for _, r := range results {
		all = append(all, r.lat...)
		errors += r.errors
	}
	slices.Sort(all)
	q := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()
	}
	fmt.Printf("rate=%.0f sent=%d ok=%d errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
		float64(len(all))/elapsed.Seconds(), total, len(all), errors, q(0.5), q(0.9), q(0.99), q(0.999), q(1))
}

var errResponse = errors.New("malformed response")

// readResponse reads one HTTP/1.1 response (Content-Length or chunked body)
// without allocating, and returns its status and whether the connection
// stays open.
func readResponse(br *bufio.Reader) (status int, keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errResponse
	}
	status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			return 0, false, errResponse
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(value))
			if err != nil {
				return 0, false, errResponse
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		for {
			line, err = br.ReadSlice('\n')
			if err != nil {
				return 0, false, err
			}
			size, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
			n, err := strconv.ParseInt(string(size), 16, 64)
			if err != nil {
				return 0, false, errResponse
			}
			if _, err := br.Discard(int(n) + 2); err != nil { // chunk and its CRLF
				return 0, false, err
			}
			if n == 0 {
				return status, keep, nil // no trailers expected
			}
		}
	case length >= 0:
		_, err = br.Discard(length)
		return status, keep, err
	}
	return status, false, errResponse // body to the end of the connection
}

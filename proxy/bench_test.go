package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/proxy/config"
)

// discardWriter is a reusable ResponseWriter for benchmarks.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkServeHTTP measures the proxy's own work per request (handler,
// routing, backend selection, forwarding over a kept-alive connection to a
// loopback backend), next to plain net/http/httputil.ReverseProxy doing the
// same job in the same run. Compare ns/op and allocs/op between the two.
func BenchmarkServeHTTP(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer be.Close()
	addr := strings.TrimPrefix(be.URL, "http://")
	be2 := httptest.NewServer(be.Config.Handler)
	defer be2.Close()
	addr2 := strings.TrimPrefix(be2.URL, "http://")

	run := func(b *testing.B, h http.Handler) {
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			req := httptest.NewRequest("GET", "http://shop.example/index.html", nil)
			req.RemoteAddr = "198.51.100.7:40000"
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		}
	}
	b.Run("xlb", func(b *testing.B) {
		c, err := config.Parse([]byte(fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}, {address: %q}]}]
routes: [{name: all, pool: app}]
`, addr, addr2)))
		if err != nil {
			b.Fatal(err)
		}
		p, err := New(c, Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(b, p)
	})
	b.Run("xlb-features", func(b *testing.B) {
		c, err := config.Parse([]byte(fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
access_log: {path: /dev/null}
pools: [{name: app, backends: [{address: %q}, {address: %q}]}]
routes:
  - name: api
    match: {hosts: [api.example], path: {prefix: /api/}}
    pool: app
  - name: all
    match: {path: {prefix: /}, headers: [{name: X-Nope, absent: true}]}
    pool: app
    request_headers: {set: {X-A: "1"}, remove: [Cookie]}
    response_headers: {set: {X-B: "2"}}
`, addr, addr2)))
		if err != nil {
			b.Fatal(err)
		}
		p, err := New(c, Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(b, p)
	})
	b.Run("httputil", func(b *testing.B) {
		targets := []*url.URL{{Scheme: "http", Host: addr}, {Scheme: "http", Host: addr2}}
		var n int
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				n++
				pr.SetURL(targets[n%2])
				pr.SetXForwarded()
			},
			Transport: &http.Transport{MaxIdleConnsPerHost: 1024},
		}
		run(b, rp)
	})
}

// BenchmarkEndToEnd sends keep-alive requests through a running proxy (real
// listener, real backend on loopback). Client, proxy and backend share the
// process, so use it for profiles (-cpuprofile), not for absolute figures.
func BenchmarkEndToEnd(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer be.Close()
	addr := strings.TrimPrefix(be.URL, "http://")
	_, base := startProxy(b, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, addr), Options{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(base + "/")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// fixedBackend answers every request head it reads with a fixed response;
// it allocates nothing per request, so a benchmark's allocations are the
// proxy's.
func fixedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkLeanPath sends keep-alive requests over one raw connection
// through a running proxy (lean HTTP/1.1 listener) to a backend that
// allocates nothing: allocs/op are the proxy's own per request.
func BenchmarkLeanPath(b *testing.B) {
	be := fixedBackend(b)
	_, base := startProxy(b, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, be), Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /index.html HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawBackend is a TCP backend that answers every request it reads with
// serve, which writes raw bytes. It counts connections.
type rawBackend struct {
	ln    net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
}

// request is what serve gets: the parsed request and the connection.
type rawServe func(req *http.Request, c net.Conn, br *bufio.Reader) (keep bool)

func newRawBackend(t *testing.T, serve rawServe) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{ln: ln}
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		rb.wg.Wait()
	})
	rb.wg.Add(1)
	go func() {
		defer rb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rb.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			rb.wg.Add(1)
			go func() {
				defer rb.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if !serve(req, c, br) {
						return
					}
				}
			}()
		}
	}()
	return rb
}

func (rb *rawBackend) addr() string { return rb.ln.Addr().String() }

// getOK gets url and fails the test unless the answer is 200 "ok".
func getOK(t *testing.T, url, what string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%s: %d %q", what, resp.StatusCode, body)
	}
}

// drain reads a request body to its end.
func drain(req *http.Request) { _, _ = io.Copy(io.Discard, req.Body) }

func TestClientKeepAlive(t *testing.T) {
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		drain(req)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	for i := range 20 {
		getOK(t, base+"/", fmt.Sprintf("request %d", i))
	}
	if n := rb.conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d backend connections, want 1", n)
	}
}

func TestClientBackendCloses(t *testing.T) {
	tests := []struct {
		name     string
		response string
		keep     bool
	}{
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false},
		{"connection close, kept open", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				drain(req)
				_, _ = io.WriteString(c, tt.response)
				return tt.keep
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			for i := range 3 {
				getOK(t, base+"/", fmt.Sprintf("request %d", i))
			}
			if n := rb.conns.Load(); n != 3 {
				t.Errorf("backend saw %d connections, want 3 (none reused)", n)
			}
		})
	}
}

func TestClientResponseFraming(t *testing.T) {
	tests := []struct {
		name     string
		response string
		body     string
		trailer  http.Header
		reused   bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", nil, true},
		{"identical lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "hello", nil, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", "hello", nil, true},
		{"chunked trailers", "HTTP/1.1 200 OK\r\nTrailer: X-Sum, X-Other\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\nX-Other: a\r\n\r\n", "hello",
			http.Header{"X-Sum": {"42"}, "X-Other": {"a"}}, true},
		{"until close", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", "hello", nil, false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", "", nil, true},
		{"not modified with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				drain(req)
				_, _ = io.WriteString(c, tt.response)
				return tt.reused
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			for i := range 2 {
				resp, err := http.Get(base + "/")
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != tt.body {
					t.Fatalf("request %d: body %q, err %v; want %q", i, body, err, tt.body)
				}
				for k, v := range tt.trailer {
					if got := resp.Trailer.Get(k); got != v[0] {
						t.Errorf("trailer %s = %q, want %q (trailers %v)", k, got, v[0], resp.Trailer)
					}
				}
			}
			want := int32(2)
			if tt.reused {
				want = 1
			}
			if n := rb.conns.Load(); n != want {
				t.Errorf("backend saw %d connections, want %d", n, want)
			}
		})
	}
}

func TestClientMalformedResponses(t *testing.T) {
	tests := []struct {
		name     string
		response string
	}{
		{"nothing", ""},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n"},
		{"http/2 status line", "HTTP/2 200 OK\r\n\r\n"},
		{"short status", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"},
		{"letters in status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
		{"no space after status", "HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n"},
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"},
		{"different lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"gzip transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"line folding", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 2\r\n\r\nok"},
		{"no colon", "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok"},
		{"control in value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok"},
		{"oversized head", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("a", 1000)+"\r\n", 70) + "Content-Length: 2\r\n\r\nok"},
		{"oversized line", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\nContent-Length: 2\r\n\r\nok"},
		{"unasked switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"},
		{"cut head", "HTTP/1.1 200 OK\r\nContent-Le"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				drain(req)
				_, _ = io.WriteString(c, tt.response)
				return false
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			resp, err := http.Get(base + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
		})
	}
}

func TestClientLargeHeadAccepted(t *testing.T) {
	// A header line longer than the read buffer but within the head limit.
	big := strings.Repeat("b", 40<<10)
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		drain(req)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nX-Small: s\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Big") != big || resp.Header.Get("X-Small") != "s" {
		t.Errorf("status %d body %q X-Small %q len(X-Big) %d", resp.StatusCode, body, resp.Header.Get("X-Small"), len(resp.Header.Get("X-Big")))
	}
}

func TestClientCutBody(t *testing.T) {
	tests := []struct{ name, response string }{
		{"short content-length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"},
		{"chunked without end", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				drain(req)
				_, _ = io.WriteString(c, tt.response)
				return false
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			resp, err := http.Get(base + "/")
			// The client sees an error: no response at all (the proxy had
			// not flushed yet) or a cut body.
			if err != nil {
				return
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("a body the backend cut reached the client complete")
			}
		})
	}
}

func TestClientDeadIdleConnectionRedialed(t *testing.T) {
	closed := make(chan struct{}, 4)
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		drain(req)
		// Keep-alive promised, then closed while the proxy holds it idle.
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close()
		closed <- struct{}{}
		return false
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	for i := range 3 {
		getOK(t, base+"/", fmt.Sprintf("request %d after the backend closed the idle connection", i))
		<-closed
	}
	if n := rb.conns.Load(); n != 3 {
		t.Errorf("backend saw %d connections, want 3", n)
	}
}

// TestClientStalePooledConnection: a backend that closes a kept-alive
// connection while the proxy holds it idle (FIN or reset) must not make a
// request fail. Replayable requests reuse the connection unprobed and are
// sent again on a new connection; the others probe it first.
func TestClientStalePooledConnection(t *testing.T) {
	tests := []struct {
		name   string
		method string
		body   string
		reset  bool
	}{
		{"GET, FIN", "GET", "", false},
		{"GET, reset", "GET", "", true},
		{"HEAD, FIN", "HEAD", "", false},
		{"POST without body, FIN", "POST", "", false},
		{"POST with body, reset", "POST", "data", true},
		{"PUT with body, FIN", "PUT", "data", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// closed gets the proxy's and the backend's ends of each
			// connection the backend closed.
			closed := make(chan [2]string, 4)
			var got atomic.Int32
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				b, _ := io.ReadAll(req.Body)
				if string(b) != tt.body {
					t.Errorf("backend got body %q, want %q", b, tt.body)
				}
				got.Add(1)
				// Keep-alive promised, then closed while the proxy holds it idle.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if tt.reset {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
				ends := [2]string{c.RemoteAddr().String(), c.LocalAddr().String()}
				c.Close()
				closed <- ends
				return false
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			for i := range 3 {
				req, err := http.NewRequest(tt.method, base+"/", strings.NewReader(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				if tt.body == "" {
					req.Body = http.NoBody
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("request %d after the backend closed the idle connection: status %d", i, resp.StatusCode)
				}
				ends := <-closed
				waitFor(t, "the FIN or reset to reach the proxy's idle connection", func() bool {
					s, ok := findTCPSocket(t, ends[0], ends[1])
					return !ok || s.state != tcpEstablished
				})
			}
			if n := got.Load(); n != 3 {
				t.Errorf("backend served %d requests, want 3 (each once)", n)
			}
		})
	}
}

// TestClientNoReplayOfUnsafeRequest: a backend that closes a reused
// connection after reading the request, without answering, gets a GET a
// second time on a new connection but a POST only once (it may have acted
// on it); both end in 502 when the backend never answers.
func TestClientNoReplayOfUnsafeRequest(t *testing.T) {
	tests := []struct {
		method string
		want   int32 // requests the backend reads after the first one
	}{
		{"GET", 2},
		{"POST", 1},
		{"DELETE", 1},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			var seen atomic.Int32
			rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
				drain(req)
				if req.URL.Path == "/warm" {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					return true
				}
				seen.Add(1)
				return false // close without an answer
			})
			_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
			resp, err := http.Get(base + "/warm") // leaves a pooled connection
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			req, _ := http.NewRequest(tt.method, base+"/x", http.NoBody)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
			if n := seen.Load(); n != tt.want {
				t.Errorf("backend read the request %d times, want %d", n, tt.want)
			}
		})
	}
}

func TestClientTimeouts(t *testing.T) {
	release := make(chan struct{})
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		drain(req)
		<-release
		return false
	})
	t.Cleanup(func() { close(release) }) // before the backend's cleanup
	tests := []struct {
		name  string
		extra string
		route string
	}{
		{"response header timeout", "timeouts: {response_header: 100ms}", ""},
		{"route timeout", "", ", timeout: 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
%s
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app%s}]
`, tt.extra, rb.addr(), tt.route)
			_, base := startProxy(t, cfg, Options{})
			resp, err := http.Get(base + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("status %d, want 504", resp.StatusCode)
			}
		})
	}
}

// TestClientStreamsRequestBody: each piece of a request body reaches the
// backend before the client sends the next one; the body is not buffered
// whole.
func TestClientStreamsRequestBody(t *testing.T) {
	pieces := make(chan string, 4)
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		buf := make([]byte, 64)
		var all []byte
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				pieces <- string(buf[:n])
				all = append(all, buf[:n]...)
			}
			if err != nil {
				break
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(all), all)
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	pr, pw := io.Pipe()
	req := mustReq(t, "POST", base+"/up", pr)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	for _, piece := range []string{"one", "two", "three"} {
		if _, err := io.WriteString(pw, piece); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-pieces:
			if got != piece {
				t.Fatalf("backend got %q, want %q", got, piece)
			}
		case res := <-done:
			t.Fatalf("request ended before the body did: %+v", res)
		}
	}
	pw.Close()
	if res := <-done; res.err != nil || res.body != "onetwothree" {
		t.Errorf("response %q %v", res.body, res.err)
	}
}

func TestClientInformational(t *testing.T) {
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		drain(req)
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 100 Continue\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(c))
	line, _ := tp.ReadLine()
	hints, _ := tp.ReadMIMEHeader()
	if !strings.HasPrefix(line, "HTTP/1.1 103") || hints.Get("Link") != "</a.css>; rel=preload" {
		t.Fatalf("first response %q %v, want 103 with Link", line, hints)
	}
	line, _ = tp.ReadLine()
	final, _ := tp.ReadMIMEHeader()
	if !strings.HasPrefix(line, "HTTP/1.1 200") || final.Get("Link") != "" {
		t.Errorf("final response %q %v, want 200 without the hint's Link", line, final)
	}
}

func TestClientExpectContinue(t *testing.T) {
	var sawExpect atomic.Bool
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		if req.Header.Get("Expect") != "" {
			sawExpect.Store(true)
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	req := mustReq(t, "PUT", base+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "payload" || !sawExpect.Load() {
		t.Errorf("status %d body %q, backend saw Expect: %v", resp.StatusCode, body, sawExpect.Load())
	}

	// A backend that answers before taking the body: the answer goes back,
	// and the connection is not reused.
	rb2 := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	_, base2 := startProxy(t, oneBackendConfig(rb2.addr(), ""), Options{})
	for range 2 {
		req = mustReq(t, "PUT", base2+"/", strings.NewReader("payload"))
		req.Header.Set("Expect", "100-continue")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("early answer: status %d, want 413", resp.StatusCode)
		}
	}
	if n := rb2.conns.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2", n)
	}
}

func TestClientRequestHead(t *testing.T) {
	var got atomic.Value
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		b, _ := io.ReadAll(req.Body)
		got.Store(fmt.Sprintf("%s %s host=%s cl=%d te=%v body=%s trailer=%v", req.Method, req.RequestURI, req.Host, req.ContentLength, req.TransferEncoding, b, req.Trailer))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	tests := []struct{ name, raw, want string }{
		{"get", "GET /a%20b?x=1&y HTTP/1.1\r\nHost: shop.example\r\n\r\n", "GET /a%20b?x=1&y host=shop.example cl=0 te=[] body= trailer=map[]"},
		{"absolute form", "GET http://shop.example/p?q HTTP/1.1\r\nHost: shop.example\r\n\r\n", "GET /p?q host=shop.example cl=0 te=[] body= trailer=map[]"},
		{"empty post", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "POST /p host=h cl=0 te=[] body= trailer=map[]"},
		{"length", "PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", "PUT /p host=h cl=3 te=[] body=abc trailer=map[]"},
		{"chunked with trailer", "POST /p HTTP/1.1\r\nHost: h\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n",
			"POST /p host=h cl=-1 te=[chunked] body=abc trailer=map[X-T:[v]]"},
		{"http/1.0 without host", "GET /old HTTP/1.0\r\n\r\n", "GET /old host=" + rb.addr() + " cl=0 te=[] body= trailer=map[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resps := rawExchange(t, base, tt.raw)
			if len(resps) == 0 || resps[0].StatusCode != 200 {
				t.Fatalf("responses %v", resps)
			}
			if s, _ := got.Load().(string); s != tt.want {
				t.Errorf("backend saw %q\nwant %q", s, tt.want)
			}
		})
	}
}

// TestClientGoneAbortsBackend: when the client goes away while the backend
// has not answered, the proxy gives up the backend connection.
func TestClientGoneAbortsBackend(t *testing.T) {
	got := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, br *bufio.Reader) bool {
		drain(req)
		got <- struct{}{}
		_, _ = br.ReadByte() // returns when the proxy closes the connection
		gone <- struct{}{}
		return false
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-got
	c.Close()
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the backend connection stayed open after the client went away")
	}
}

// TestClientIdleTimeout: an idle backend connection is closed once it has
// been idle for timeouts.idle, and the next request dials a new one.
func TestClientIdleTimeout(t *testing.T) {
	closed := make(chan struct{}, 4)
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, br *bufio.Reader) bool {
		drain(req)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, err := br.Peek(1); err != nil {
			closed <- struct{}{} // the proxy closed the idle connection
			return false
		}
		return true
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), "timeouts: {idle: 50ms}"), Options{})
	for i := range 2 {
		resp, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatal("the idle backend connection was not closed")
		}
	}
	if n := rb.conns.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2", n)
	}
}

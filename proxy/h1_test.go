package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/internal/h1"
)

// httpBackend starts a loopback backend with handler h and returns its
// host:port.
func httpBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// h1Of returns the lean server of the proxy's listener "web".
func h1Of(t *testing.T, p *Proxy) *h1.Server {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.listeners["web"]
	if l == nil || l.h1 == nil {
		t.Fatal("listener web has no lean HTTP/1.1 server")
	}
	return l.h1
}

// rawConn is a client connection for raw HTTP/1.1 exchanges.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, base string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one response to a request with method.
func (rc *rawConn) read(method string) (*http.Response, string) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the proxy closed the connection (EOF) within 10 s.
func (rc *rawConn) closed() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := rc.br.ReadByte()
	return err == io.EOF
}

// staysOpen reports whether the proxy leaves the connection open, sending
// nothing, for d.
func (rc *rawConn) staysOpen(d time.Duration) bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	_, err := rc.br.ReadByte()
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// consumed waits until the proxy has read everything sent on the
// connection (its socket's receive queue is empty).
func (rc *rawConn) consumed() {
	rc.t.Helper()
	local, remote := rc.c.RemoteAddr().String(), rc.c.LocalAddr().String()
	waitFor(rc.t, "the proxy to read what was sent", func() bool {
		s, ok := findTCPSocket(rc.t, local, remote)
		return ok && s.rxQueue == 0
	})
}

// TestH1Responses: responses written by the lean path are framed the way
// net/http frames them: a length for bodies the handler finished, chunks
// (with trailers) for longer ones, none for HEAD, 204 and 304.
func TestH1Responses(t *testing.T) {
	big := strings.Repeat("x", 10000)
	be := httpBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			_, _ = io.WriteString(w, "hello")
		case "/big":
			w.(http.Flusher).Flush() // no length: chunked to the proxy
			_, _ = io.WriteString(w, big)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Etag", `"a"`)
			w.WriteHeader(http.StatusNotModified)
		case "/early":
			w.Header().Set("Link", "</s.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "after")
		}
	}))
	p, base := startProxy(t, oneBackendConfig(be, ""), Options{})
	tests := []struct {
		method, path string
		status       int
		body         string
		length       int64 // -1: chunked
		trailer      string
	}{
		{"GET", "/short", 200, "hello", 5, ""},
		{"HEAD", "/short", 200, "", 5, ""},
		{"GET", "/big", 200, big, -1, ""},
		{"GET", "/trailer", 200, "body", -1, "42"},
		{"GET", "/204", 204, "", 0, ""},
		{"GET", "/304", 304, "", 0, ""},
		{"GET", "/early", 200, "after", 5, ""},
	}
	rc := dialRaw(t, base)
	for _, tt := range tests {
		rc.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := rc.read(tt.method)
		if resp.StatusCode == http.StatusEarlyHints {
			if resp.Header.Get("Link") == "" {
				t.Errorf("%s %s: 103 without its Link header", tt.method, tt.path)
			}
			resp, body = rc.read(tt.method)
		}
		if resp.StatusCode != tt.status || body != tt.body {
			t.Errorf("%s %s: %d %.20q, want %d %.20q", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.body)
		}
		if tt.length == -1 {
			if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
				t.Errorf("%s %s: transfer encoding %v, want chunked", tt.method, tt.path, resp.TransferEncoding)
			}
		} else if resp.ContentLength != tt.length && !(tt.length == 0 && resp.ContentLength == -1) {
			t.Errorf("%s %s: content length %d, want %d", tt.method, tt.path, resp.ContentLength, tt.length)
		}
		if tt.status == 204 || tt.status == 304 {
			if resp.Header.Get("Content-Length") != "" || len(resp.TransferEncoding) > 0 {
				t.Errorf("%s %s: framing headers on a response without body: %v", tt.method, tt.path, resp.Header)
			}
		}
		if got := resp.Trailer.Get("X-Sum"); got != tt.trailer {
			t.Errorf("%s %s: trailer X-Sum %q, want %q", tt.method, tt.path, got, tt.trailer)
		}
		if resp.Header.Get("Date") == "" {
			t.Errorf("%s %s: no Date header", tt.method, tt.path)
		}
	}
	if h := h1Of(t, p); h.Served() != uint64(len(tests)) || h.HandedOff() != 0 {
		t.Errorf("lean path served %d requests and handed off %d connections, want %d and 0",
			h.Served(), h.HandedOff(), len(tests))
	}
}

// TestH1Connection: pipelining, Connection: close, and a connection that
// switches to net/http mid-way (a request with a body) keeps working.
func TestH1Connection(t *testing.T) {
	_, be := echoBackend(t, "a")
	p, base := startProxy(t, oneBackendConfig(be, ""), Options{})
	h := h1Of(t, p)

	rc := dialRaw(t, base)
	rc.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for i := 1; i <= 3; i++ {
		resp, body := rc.read("GET")
		if resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf(`"/%d"`, i)) {
			t.Fatalf("pipelined response %d: %d %s", i, resp.StatusCode, body)
		}
	}
	rc.send("GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("Connection: close request: status %d, close %v", resp.StatusCode, resp.Close)
	}
	if !rc.closed() {
		t.Error("connection stayed open after Connection: close")
	}
	if n := h.Served(); n != 4 {
		t.Errorf("lean path served %d requests, want 4", n)
	}

	rc = dialRaw(t, base)
	rc.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("GET before the body: %d", resp.StatusCode)
	}
	rc.send("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := rc.read("POST")
	if resp.StatusCode != 200 || !strings.Contains(body, `"body_len":5`) {
		t.Fatalf("POST on a lean connection: %d %s", resp.StatusCode, body)
	}
	rc.send("GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"/c"`) {
		t.Fatalf("GET after the handoff: %d %s", resp.StatusCode, body)
	}
	if n := h.HandedOff(); n != 1 {
		t.Errorf("handed off %d connections, want 1", n)
	}

	// A head in pieces is waited for.
	rc = dialRaw(t, base)
	for _, part := range []string{"GET /split HTTP/1.1\r\nHo", "st: a\r\n", "\r", "\n"} {
		rc.send(part)
		rc.consumed() // each part is read on its own
	}
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"/split"`) {
		t.Fatalf("split head: %d %s", resp.StatusCode, body)
	}
	if n, m := h.Served(), h.HandedOff(); n != 6 || m != 1 {
		t.Errorf("served %d requests and handed off %d connections, want 6 and 1", n, m)
	}
}

// TestH1HeaderTimeout: a head that stops half-way is given up after
// read_header_timeout, the connection closed without an answer.
func TestH1HeaderTimeout(t *testing.T) {
	_, be := echoBackend(t, "a")
	cfg := strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"}`, `address: "127.0.0.1:0", read_header_timeout: 200ms}`, 1)
	p, base := startProxy(t, cfg, Options{})
	rc := dialRaw(t, base)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rc.send("GET / HTTP/1.1\r\nHo")
	if !rc.closed() {
		t.Error("connection with a stalled head not closed")
	}
	if n := h1Of(t, p).HandedOff(); n != 0 {
		t.Errorf("handed off %d connections, want 0", n)
	}
}

// TestH1Refused: malformed heads get net/http's answers.
func TestH1Refused(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, oneBackendConfig(be, "")+"\n", Options{})
	tests := []struct {
		name, raw string
		status    int
	}{
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n", 400},
		{"bad version", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resps := rawExchange(t, base, tt.raw)
			if len(resps) == 0 || resps[0].StatusCode != tt.status {
				t.Fatalf("responses %v, want one with status %d", resps, tt.status)
			}
		})
	}
}

// TestH1IdleTimeout: a lean connection idle longer than idle_timeout is
// closed, no sooner and not much later; one in use is not.
func TestH1IdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	_, be := echoBackend(t, "a")
	cfg := strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"}`, `address: "127.0.0.1:0", idle_timeout: 300ms}`, 1)
	_, base := startProxy(t, cfg, Options{})
	rc := dialRaw(t, base)
	// Requests a third of the timeout apart, over more than the timeout:
	// each one starts the wait anew.
	var sent time.Time
	for i := range 4 {
		if i > 0 && !rc.staysOpen(idle/3) {
			t.Fatalf("connection closed after request %d, idle for less than idle_timeout", i)
		}
		sent = time.Now()
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	answered := time.Now()
	if !rc.closed() {
		t.Fatal("idle connection not closed")
	}
	// The wait began between sending the last request and reading its
	// answer. The upper bound leaves room for a busy machine.
	if d := time.Since(sent); d < idle {
		t.Errorf("closed %s after the last request was sent, before idle_timeout %s", d, idle)
	}
	if d := time.Since(answered); d > idle+2*time.Second {
		t.Errorf("closed %s after the last answer, want about idle_timeout %s", d, idle)
	}
}

// TestH1ShutdownClosesIdle: a graceful shutdown closes idle lean
// connections at once, waiting or parked, and lets a request in flight
// finish.
func TestH1ShutdownClosesIdle(t *testing.T) {
	for _, parked := range []bool{false, true} {
		t.Run(fmt.Sprintf("parked=%v", parked), func(t *testing.T) { testH1ShutdownClosesIdle(t, parked) })
	}
}

func testH1ShutdownClosesIdle(t *testing.T, parked bool) {
	release := make(chan struct{})
	be := httpBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	c, err := config.Parse([]byte(oneBackendConfig(be, "")))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var base string
	waitFor(t, "listener", func() bool {
		if a := p.Addrs()["web"]; a != nil {
			base = "http://" + a.String()
			return true
		}
		return false
	})
	idle := dialRaw(t, base)
	idle.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := idle.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := h1Of(t, p)
	if parked {
		waitFor(t, "the idle connection to park", func() bool { return h.Parked() == 1 })
	}
	busy := dialRaw(t, base)
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	waitFor(t, "slow request in flight", func() bool { return h.Served() == 2 })
	cancel()
	if !idle.closed() {
		t.Error("idle connection not closed at shutdown")
	}
	close(release)
	resp, body := busy.read("GET")
	if resp.StatusCode != 200 || body != "ok" || !resp.Close {
		t.Errorf("request in flight at shutdown: %d %q close %v", resp.StatusCode, body, resp.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	done <- nil
}

// TestH1PanicClosesConnection: a handler that aborts (a body the backend
// cut) closes the client connection without a complete response (as
// net/http does: nothing, or a cut body).
func TestH1PanicClosesConnection(t *testing.T) {
	rb := newRawBackend(t, func(req *http.Request, c net.Conn, _ *bufio.Reader) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		return false
	})
	_, base := startProxy(t, oneBackendConfig(rb.addr(), ""), Options{})
	rc := dialRaw(t, base)
	rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
	}
	if err == nil {
		t.Fatal("the client got a complete response to a body the backend cut")
	}
	if !rc.closed() {
		t.Error("connection stayed open after a cut response")
	}
}

// TestH1IdleConnectionParks: a connection idle for a sweeper interval
// gives its buffers back (parks), serves its next request as before, and
// is still closed at idle_timeout while parked.
func TestH1IdleConnectionParks(t *testing.T) {
	_, be := echoBackend(t, "a")
	cfg := strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"}`, `address: "127.0.0.1:0", idle_timeout: 4s}`, 1)
	p, base := startProxy(t, cfg, Options{})
	h := h1Of(t, p)
	rc := dialRaw(t, base)
	for i := range 2 {
		rc.send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf(`"/%d"`, i)) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		waitFor(t, "the idle connection to park", func() bool { return h.Parked() == 1 })
	}
	// Pipelined requests after parking, the head split across reads.
	rc.send("GET /x HTTP/1.1\r\nHo")
	rc.consumed()
	rc.send("st: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []string{"/x", "/y"} {
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"`+want+`"`) {
			t.Fatalf("after parking, %s: %d %s", want, resp.StatusCode, body)
		}
	}
	if h.Parked() != 0 {
		t.Errorf("%d connections parked while one is busy", h.Parked())
	}
	waitFor(t, "the idle connection to park again", func() bool { return h.Parked() == 1 })
	if !rc.closed() {
		t.Error("parked connection not closed at idle_timeout")
	}
	waitFor(t, "the closed connection to leave", func() bool { return h.Parked() == 0 })
}

// TestH1ParkedConnectionsConcurrently: many connections park, wake at once
// with requests, park again, and are closed at once when their listener is
// replaced (as at shutdown).
func TestH1ParkedConnectionsConcurrently(t *testing.T) {
	const n = 20
	_, be := echoBackend(t, "a")
	p, base := startProxy(t, oneBackendConfig(be, ""), Options{})
	h := h1Of(t, p)
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, base)
		conns[i].send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, _ := conns[i].read("GET"); resp.StatusCode != 200 {
			t.Fatalf("conn %d: %d", i, resp.StatusCode)
		}
	}
	waitFor(t, "every connection to park", func() bool { return h.Parked() == n })
	errs := make(chan error, n)
	for i, rc := range conns {
		go func() {
			if _, err := io.WriteString(rc.c, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)); err != nil {
				errs <- err
				return
			}
			_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"/%d"`, i)) {
					err = fmt.Errorf("conn %d: %d %s", i, resp.StatusCode, b)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every connection to park again", func() bool { return h.Parked() == n })

	// A changed listener setting replaces the listener: its idle
	// connections, parked ones included, are closed at once.
	c, err := config.Parse([]byte(strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"}`, `address: "127.0.0.1:0", idle_timeout: 61s}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	for i, rc := range conns {
		_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := rc.br.ReadByte(); err != io.EOF {
			t.Fatalf("parked conn %d after its listener was replaced: %v, want EOF", i, err)
		}
	}
	waitFor(t, "no connection left parked", func() bool { return h.Parked() == 0 })
}

// TestH1ReloadKeepsParked: a reload that keeps the listener keeps its
// parked connections, and their next requests follow the new routes.
func TestH1ReloadKeepsParked(t *testing.T) {
	const n = 5
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	p, base := startProxy(t, oneBackendConfig(a, ""), Options{})
	h := h1Of(t, p)
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, base)
		conns[i].send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := conns[i].read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"name":"a"`) {
			t.Fatalf("conn %d: %d %s", i, resp.StatusCode, body)
		}
	}
	waitFor(t, "every connection to park", func() bool { return h.Parked() == n })
	c, err := config.Parse([]byte(oneBackendConfig(b, "")))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	if h1Of(t, p) != h || h.Parked() != n {
		t.Fatalf("after the reload: same server %v, %d parked, want %d", h1Of(t, p) == h, h.Parked(), n)
	}
	for i, rc := range conns {
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"name":"b"`) {
			t.Fatalf("parked conn %d after the reload: %d %s, want backend b", i, resp.StatusCode, body)
		}
	}
}

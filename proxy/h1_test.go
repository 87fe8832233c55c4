package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseLean runs the lean parser on one head (the text up to and including
// the empty line).
func parseLean(head string) (*http.Request, bool) {
	s := &h1Server{}
	c := &h1Conn{s: s, hdr: http.Header{}, remote: "198.51.100.7:4000"}
	c.base = *(&http.Request{}).WithContext(context.Background())
	if !c.parse([]byte(head)) {
		return nil, false
	}
	r := c.req
	return &r, true
}

// sameAsNetHTTP checks that a head the lean parser accepted is read the
// same way by net/http.
func sameAsNetHTTP(t *testing.T, head string, got *http.Request) {
	t.Helper()
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	if err != nil {
		t.Fatalf("lean parser accepted %q, net/http refuses it: %v", head, err)
	}
	if got.Method != want.Method || got.URL.String() != want.URL.String() || got.Host != want.Host ||
		got.RequestURI != want.RequestURI || got.Close != want.Close || got.Proto != want.Proto ||
		got.ContentLength != want.ContentLength {
		t.Fatalf("%q: lean %s %s host %q uri %q close %v cl %d; net/http %s %s host %q uri %q close %v cl %d", head,
			got.Method, got.URL, got.Host, got.RequestURI, got.Close, got.ContentLength,
			want.Method, want.URL, want.Host, want.RequestURI, want.Close, want.ContentLength)
	}
	if *got.URL != *want.URL {
		t.Fatalf("%q: lean URL %#v, net/http %#v", head, got.URL, want.URL)
	}
	gh, wh := got.Header, want.Header
	if len(gh) == 0 && len(wh) == 0 {
		return
	}
	if !reflect.DeepEqual(map[string][]string(gh), map[string][]string(wh)) {
		t.Fatalf("%q: lean header %v, net/http %v", head, gh, wh)
	}
	if b, _ := io.ReadAll(want.Body); len(b) > 0 {
		t.Fatalf("%q: lean saw no body, net/http read %q", head, b)
	}
}

func TestH1Parse(t *testing.T) {
	tests := []struct {
		name string
		head string
		lean bool // served on the lean path; else handed to net/http
	}{
		{"simple", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"query and escapes", "GET /a%20b/c?x=1&y=%2F HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n", true},
		{"plain path and query", "GET /a/b.c;d=e@f:g?x=1&y=/?z HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"empty query", "GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"two question marks", "GET /a?? HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"double slash", "GET //a/b HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"escaped characters", "GET /a!b'(c)*\"d HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"escaped slash kept raw", "GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"many fields, repeated", "DELETE /x HTTP/1.1\r\nhost: a\r\nx-a: 1\r\nX-A: 2\r\naccept:  text/html \r\nCookie: a=b\r\n\r\n", true},
		{"empty value", "GET / HTTP/1.1\r\nHost: a\r\nX-E:\r\n\r\n", true},
		{"connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", true},
		{"pragma no-cache", "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n", true},
		{"odd method", "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", true},
		{"tab in value", "GET / HTTP/1.1\r\nHost: a\r\nX-T: a\tb\r\n\r\n", true},

		{"body by length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", false},
		{"zero length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"expect", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false},
		{"websocket", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHttp2-Settings: AAAA\r\n\r\n", false},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", false},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\n", false},
		{"no host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", false},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false},
		{"absolute form", "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", false},
		{"bare LF in field", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n", false},
		{"bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", false},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", false},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", false},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", false},
		{"bad name char", "GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", false},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", false},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f\r\n\r\n", false},
		{"obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", false},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", false},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", false},
		{"no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bad method char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := parseLean(tt.head)
			if ok != tt.lean {
				t.Fatalf("lean = %v, want %v", ok, tt.lean)
			}
			if ok {
				sameAsNetHTTP(t, tt.head, r)
			}
		})
	}
}

// FuzzH1Parse: whatever the lean parser accepts, net/http reads the same
// way (method, target, host, header fields, no body).
func FuzzH1Parse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a%20b?x=1 HTTP/1.1\r\nHost: a:1\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nX-B:  v \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		i := strings.Index(head, "\r\n\r\n")
		if i < 0 {
			return
		}
		head = head[:i+4]
		if r, ok := parseLean(head); ok {
			sameAsNetHTTP(t, head, r)
		}
	})
}

// httpBackend starts a loopback backend with handler h and returns its
// host:port.
func httpBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// h1Of returns the lean server of the proxy's listener "web".
func h1Of(t *testing.T, p *Proxy) *h1Server {
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
	if h := h1Of(t, p); h.served.Load() != uint64(len(tests)) || h.handedOff.Load() != 0 {
		t.Errorf("lean path served %d requests and handed off %d connections, want %d and 0",
			h.served.Load(), h.handedOff.Load(), len(tests))
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
	if n := h.served.Load(); n != 4 {
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
	if n := h.handedOff.Load(); n != 1 {
		t.Errorf("handed off %d connections, want 1", n)
	}

	// A head in pieces is waited for.
	rc = dialRaw(t, base)
	for _, part := range []string{"GET /split HTTP/1.1\r\nHo", "st: a\r\n", "\r", "\n"} {
		rc.send(part)
		time.Sleep(20 * time.Millisecond)
	}
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"/split"`) {
		t.Fatalf("split head: %d %s", resp.StatusCode, body)
	}
	if n, m := h.served.Load(), h.handedOff.Load(); n != 6 || m != 1 {
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
	if n := h1Of(t, p).handedOff.Load(); n != 0 {
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
// closed; one in use is not.
func TestH1IdleTimeout(t *testing.T) {
	_, be := echoBackend(t, "a")
	cfg := strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"}`, `address: "127.0.0.1:0", idle_timeout: 300ms}`, 1)
	_, base := startProxy(t, cfg, Options{})
	rc := dialRaw(t, base)
	for range 4 {
		rc.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !rc.closed() {
		t.Error("idle connection not closed")
	}
}

// TestH1ShutdownClosesIdle: a graceful shutdown closes idle lean
// connections at once and lets a request in flight finish.
func TestH1ShutdownClosesIdle(t *testing.T) {
	release := make(chan struct{})
	be := httpBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	c, err := Parse([]byte(oneBackendConfig(be, "")))
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
	busy := dialRaw(t, base)
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	h := h1Of(t, p)
	waitFor(t, "slow request in flight", func() bool { return h.served.Load() == 2 })
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

func TestTemporaryAccept(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}, true},
		{net.ErrClosed, false},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EBADF)}, false},
	}
	for _, tt := range tests {
		if got := temporaryAccept(tt.err); got != tt.want {
			t.Errorf("temporaryAccept(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

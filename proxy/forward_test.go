package proxy

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func oneBackendConfig(be string, extra string) string {
	return fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
%s
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, extra, be)
}

// rawExchange writes a raw request on a new connection and returns every
// response read until the proxy closes the connection or goes quiet.
func rawExchange(t *testing.T, base, raw string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, resp)
		if resp.Close {
			return out
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	}
}

func decodeEcho(t *testing.T, resp *http.Response) echo {
	t.Helper()
	var e echo
	body, _ := io.ReadAll(resp.Body)
	if err := jsonUnmarshal(body, &e); err != nil {
		t.Fatalf("decode echo %q: %v", body, err)
	}
	return e
}

func TestHopByHopHeaders(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, oneBackendConfig(be, ""), Options{})
	raw := "GET /x HTTP/1.1\r\nHost: shop.example\r\n" +
		"Connection: keep-alive, X-Private, X-Forwarded-For, X-Request-Id, Forwarded\r\n" +
		"X-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: trailers\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Request-Id: abc-123\r\n\r\n"
	resps := rawExchange(t, base, raw)
	if len(resps) != 1 || resps[0].StatusCode != 200 {
		t.Fatalf("responses %v", resps)
	}
	e := decodeEcho(t, resps[0])
	for _, h := range []string{"Connection", "X-Private", "Keep-Alive", "Proxy-Connection"} {
		if v, ok := e.Header[h]; ok {
			t.Errorf("backend got hop-by-hop header %s: %q", h, v)
		}
	}
	if te := e.Header.Get("Te"); te != "trailers" && te != "" {
		t.Errorf("Te = %q", te)
	}
	// Naming a header in Connection cannot remove what the proxy sets,
	// nor smuggle a client value through.
	if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", got)
	}
	if got := e.Header.Get("Forwarded"); got != `for=127.0.0.1;host="shop.example";proto=http` {
		t.Errorf("Forwarded = %q", got)
	}
	if got := e.Header.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("X-Request-Id = %q, want abc-123 passed through", got)
	}
	if got := resps[0].Header.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("response X-Request-Id = %q", got)
	}
}

func TestForwardingHeaders(t *testing.T) {
	_, be := echoBackend(t, "a")
	tests := []struct {
		name      string
		trusted   string
		inXFF     string
		inProto   string
		inHost    string
		wantXFF   string
		wantProto string
		wantHost  string
		wantFwd   string
	}{
		{name: "untrusted client spoofing", trusted: "", inXFF: "1.2.3.4", inProto: "https", inHost: "evil.example",
			wantXFF: "127.0.0.1", wantProto: "http", wantHost: "shop.example", wantFwd: `for=127.0.0.1;host="shop.example";proto=http`},
		{name: "trusted front end", trusted: `trusted_proxies: ["127.0.0.0/8"]`, inXFF: "1.2.3.4", inProto: "https", inHost: "www.example",
			wantXFF: "1.2.3.4, 127.0.0.1", wantProto: "https", wantHost: "www.example", wantFwd: `for=127.0.0.1;host="shop.example";proto=http`},
		{name: "trusted, no headers", trusted: `trusted_proxies: ["127.0.0.1"]`,
			wantXFF: "127.0.0.1", wantProto: "http", wantHost: "shop.example", wantFwd: `for=127.0.0.1;host="shop.example";proto=http`},
		{name: "other network trusted", trusted: `trusted_proxies: ["10.0.0.0/8", "2001:db8::/32"]`, inXFF: "1.2.3.4",
			wantXFF: "127.0.0.1", wantProto: "http", wantHost: "shop.example", wantFwd: `for=127.0.0.1;host="shop.example";proto=http`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, base := startProxy(t, oneBackendConfig(be, tc.trusted), Options{})
			req := mustReq(t, "GET", base+"/", nil)
			req.Host = "shop.example"
			if tc.inXFF != "" {
				req.Header.Set("X-Forwarded-For", tc.inXFF)
			}
			if tc.inProto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.inProto)
			}
			if tc.inHost != "" {
				req.Header.Set("X-Forwarded-Host", tc.inHost)
			}
			_, e := getEcho(t, nil, req)
			if got := strings.Join(e.Header["X-Forwarded-For"], ","); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tc.wantXFF)
			}
			if got := e.Header.Get("X-Forwarded-Proto"); got != tc.wantProto {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tc.wantProto)
			}
			if got := e.Header.Get("X-Forwarded-Host"); got != tc.wantHost {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, tc.wantHost)
			}
			if got := e.Header.Get("Forwarded"); got != tc.wantFwd {
				t.Errorf("Forwarded = %q, want %q", got, tc.wantFwd)
			}
			if e.Host != "shop.example" {
				t.Errorf("Host = %q, want shop.example (passed through)", e.Host)
			}
		})
	}
}

func TestRequestIDGenerated(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, oneBackendConfig(be, "request_id_header: X-Trace"), Options{})
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		req := mustReq(t, "GET", base+"/", nil)
		if i == 2 {
			req.Header.Set("X-Trace", "bad value with spaces")
		}
		resp, e := getEcho(t, nil, req)
		id := e.Header.Get("X-Trace")
		if id == "" || id != resp.Header.Get("X-Trace") || seen[id] || strings.Contains(id, " ") {
			t.Fatalf("request %d: id %q (response %q, seen %v)", i, id, resp.Header.Get("X-Trace"), seen)
		}
		seen[id] = true
	}
}

func TestChunkedAndStreamingBodies(t *testing.T) {
	release := make(chan struct{})
	srv, be := echoBackend(t, "a")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("X-Backend", "a")
			_, _ = io.WriteString(w, "first|")
			http.NewResponseController(w).Flush()
			<-release
			_, _ = io.WriteString(w, "second")
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, r.TransferEncoding)
	})
	_, base := startProxy(t, oneBackendConfig(be, ""), Options{})

	// A chunked upload of 32 MiB streams through.
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 512; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, err := http.Post(base+"/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != fmt.Sprintf("%d [chunked]", 512*64<<10) {
		t.Errorf("upload: backend saw %q", body)
	}

	// The first part of a streamed response reaches the client before the
	// backend has finished.
	resp, err = http.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first|" {
		t.Fatalf("first part: %q %v", buf, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second" {
		t.Errorf("rest %q", rest)
	}
}

func TestSmugglingRejected(t *testing.T) {
	srv, be := echoBackend(t, "a")
	paths := make(chan string, 10)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		_, _ = io.Copy(io.Discard, r.Body)
	})
	_, base := startProxy(t, oneBackendConfig(be, ""), Options{})
	tests := []struct {
		name, raw  string
		wantStatus int
	}{
		{"CL and TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"TE and CL, other case", "POST /a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"huge header", "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
		{"huge URL", "GET /" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
		{"two content lengths", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resps := rawExchange(t, base, tc.raw)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want exactly 1 (connection must close)", len(resps))
			}
			if resps[0].StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d", resps[0].StatusCode, tc.wantStatus)
			}
			select {
			case p := <-paths:
				t.Errorf("backend received %s", p)
			default:
			}
		})
	}
	// A body that mentions both headers is not a smuggling attempt.
	resp, err := http.Post(base+"/ok", "text/plain", strings.NewReader("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || <-paths != "/ok" {
		t.Errorf("plain POST: status %d", resp.StatusCode)
	}
}

func TestUpgrades(t *testing.T) {
	srv, be := echoBackend(t, "a")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.Header().Set("X-Backend", "a")
			_ = jsonEncode(w, echo{Path: r.URL.Path, Header: r.Header})
			return
		}
		wsEcho(w, r)
	})
	_, base := startProxy(t, oneBackendConfig(be, ""), Options{})

	t.Run("websocket echo", func(t *testing.T) {
		c, br := wsDial(t, base)
		defer c.Close()
		for _, msg := range []string{"hello", "through the proxy"} {
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
				t.Fatalf("echo %q: got %q %v", msg, buf, err)
			}
		}
	})
	t.Run("h2c upgrade dropped", func(t *testing.T) {
		raw := "GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
		resps := rawExchange(t, base, raw)
		if len(resps) == 0 || resps[0].StatusCode != 200 {
			t.Fatalf("responses %v", resps)
		}
		e := decodeEcho(t, resps[0])
		if e.Header.Get("Upgrade") != "" || e.Header.Get("Http2-Settings") != "" || e.Header.Get("Connection") != "" {
			t.Errorf("backend saw upgrade headers: %v", e.Header)
		}
	})
}

// wsEcho is a minimal WebSocket server side: the handshake, then it echoes
// raw bytes (the proxy does not look at frames).
func wsEcho(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(h[:]))
	_ = brw.Flush()
	_, _ = io.Copy(c, brw)
}

// wsDial opens a WebSocket through the proxy and returns the connection
// after a checked handshake.
func wsDial(t *testing.T, base string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		c.Close()
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	return c, br
}

func TestBackendErrors(t *testing.T) {
	srv, be := echoBackend(t, "a")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - {name: slow, backends: [{address: %q}]}
  - {name: dead, backends: [{address: %q}]}
routes:
  - {name: slow, match: {path: {prefix: /slow}}, pool: slow, timeout: 50ms}
  - {name: dead, pool: dead}
`, be, deadAddr)
	p, base := startProxy(t, cfg, Options{})
	for path, want := range map[string]int{"/slow": 504, "/dead": 502} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
	}
	if err := p.Drain("dead", deadAddr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/dead")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("all drained: status %d, want 503", resp.StatusCode)
	}
}

func TestResponseHandling(t *testing.T) {
	srv, be := echoBackend(t, "a")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/hop":
			w.Header().Set("Connection", "X-Internal")
			w.Header().Set("X-Internal", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-Public", "yes")
			_, _ = io.WriteString(w, "ok")
		case "/cut-length", "/cut-chunked":
			c, brw, _ := http.NewResponseController(w).Hijack()
			if r.URL.Path == "/cut-length" {
				_, _ = io.WriteString(brw, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
			} else {
				_, _ = io.WriteString(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort\r\n")
			}
			_ = brw.Flush()
			c.Close()
		case "/post":
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d:%s:%v", r.ContentLength, body, r.TransferEncoding)
		}
	})
	_, base := startProxy(t, oneBackendConfig(be, ""), Options{})

	resp, err := http.Get(base + "/trailer")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer: body %q trailer %v", body, resp.Trailer)
	}

	resp, err = http.Get(base + "/hop")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Internal") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Public") != "yes" {
		t.Errorf("response hop-by-hop headers: %v", resp.Header)
	}

	for _, path := range []string{"/cut-length", "/cut-chunked"} {
		resp, err := http.Get(base + path)
		if err != nil {
			continue // cut before the headers arrived: also a failure the client sees
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: client read a complete body from a response the backend cut short", path)
		}
	}

	resp, err = http.Post(base+"/post", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "5:hello:[]" {
		t.Errorf("POST with Content-Length: backend saw %q", body)
	}
}

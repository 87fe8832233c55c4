package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSmuggleScan feeds byte streams to the header sniffer, split at every
// position into two reads, and checks the verdict.
func TestSmuggleScan(t *testing.T) {
	tests := []struct {
		name, in string
		want     bool
	}{
		{"plain GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"CL only", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", false},
		{"TE only", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"TE and CL lower case", "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", true},
		{"space before colon", "POST / HTTP/1.1\r\nContent-Length : 3\r\nTransfer-Encoding : chunked\r\n\r\n", true},
		{"second request", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"LF only", "POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", true},
		{"in a body, no request line", "POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"split across blocks", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	}
	for _, tc := range tests {
		for cut := 0; cut <= len(tc.in); cut++ {
			c := &trackedConn{sniff: true}
			c.scan([]byte(tc.in[:cut]))
			c.scan([]byte(tc.in[cut:]))
			if got := c.smuggled.Load(); got != tc.want {
				t.Errorf("%s (cut at %d): smuggled = %v, want %v", tc.name, cut, got, tc.want)
				break
			}
		}
	}
}

// TestWriteTimeout: a client that stops reading a large response is
// disconnected after the listener's write_timeout, on the lean HTTP/1.1 path
// (GET) and on net/http's (a POST with a body), and the backend exchange
// ends with it. Without the timeout the backend's write would block until
// the test ends.
func TestWriteTimeout(t *testing.T) {
	writeErr := make(chan error, 4)
	chunk := make([]byte, 64<<10)
	be := httpBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(1024*len(chunk)))
		for range 1024 { // 64 MiB: more than any socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}))
	cfg := strings.Replace(oneBackendConfig(be, ""), `address: "127.0.0.1:0"`, `address: "127.0.0.1:0", write_timeout: 1s`, 1)
	_, base := startProxy(t, cfg, Options{})
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
	} {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}}
		c, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		// Read nothing: the proxy's writes stall.
		select {
		case err := <-writeErr:
			if err == nil {
				t.Fatalf("%q: the backend wrote the whole response to a client that reads nothing", req)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%q: the exchange with a client that reads nothing still runs after 15s (write_timeout 1s)", req)
		}
		// The proxy closed the connection: what is left is a cut response.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err == nil && n >= int64(1024*len(chunk)) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%q: read %d bytes, %v: want a response cut by a closed connection", req, n, err)
		}
	}
}

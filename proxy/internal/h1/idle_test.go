package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// Parking is driven by the sweeper (once a second), so these tests take a
// few seconds each; every wait is on a condition.

type testServer struct {
	*Server
	addr string
	// goroutines is how many ran before the server started.
	goroutines int
}

// startServer serves "path" answers on a loopback port with the given
// idle timeout (0: none); the server is closed at the end of the test and
// no goroutine of its may be left.
func startServer(t *testing.T, idle time.Duration, handler http.HandlerFunc) *testServer {
	t.Helper()
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "path="+r.URL.Path) }
	}
	g := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, IdleTimeout: idle, ReadHeaderTimeout: 10 * time.Second}
	s := NewServer(ln, srv, context.Background(), slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("server not done 10s after close: a connection did not end")
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), goroutines: g}
}

func (s *testServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, cond)
}

type client struct {
	t  *testing.T
	c  *net.TCPConn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// get sends a GET for path and checks the answer.
func (c *client) get(path string) {
	c.t.Helper()
	c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
	c.expect(path)
}

func (c *client) expect(path string) {
	c.t.Helper()
	if err := c.readAnswer(path); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) readAnswer(path string) error {
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("read answer to %s: %w", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(b) != "path="+path {
		return fmt.Errorf("answer to %s: %d %q %v", path, resp.StatusCode, b, err)
	}
	return nil
}

// closedByServer reports whether the server closed the connection (EOF
// or a reset) within 10 s.
func (c *client) closedByServer() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestParkedConnectionsHoldNoGoroutine: idle connections that parked hold
// no goroutine (the count stays where it was before they were opened),
// and each is served again when a request comes.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 300
	s := startServer(t, 0, nil)
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, s.addr)
		clients[i].get("/first")
	}
	waitFor(t, "every connection to park", func() bool { return s.Parked() == n })
	// A connection counts as parked just before its goroutine returns.
	// What stays: the server's own goroutines (accept loop, sweeper,
	// parker, net/http for handed-off connections) and a few passing ones.
	noGoroutinePerConn(t, s, n)
	for i, c := range clients {
		c.get(fmt.Sprintf("/again/%d", i))
	}
	waitFor(t, "every connection to park again", func() bool { return s.Parked() == n })
	noGoroutinePerConn(t, s, n)
}

func noGoroutinePerConn(t *testing.T, s *testServer, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("goroutines to fall to the server's own with %d parked connections (no goroutine each)", n),
		func() bool { return runtime.NumGoroutine() <= s.goroutines+10 })
}

// TestParkedConnectionServesSplitAndPipelined: a request head that comes
// in pieces after parking, followed by a pipelined one, is served.
func TestParkedConnectionServesSplitAndPipelined(t *testing.T) {
	s := startServer(t, 0, nil)
	c := dial(t, s.addr)
	c.get("/a")
	waitFor(t, "the connection to park", func() bool { return s.Parked() == 1 })
	c.send("GET /b HTTP/1.1\r\nHo")
	waitFor(t, "the connection to wake", func() bool { return s.Parked() == 0 })
	c.send("st: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	c.expect("/b")
	c.expect("/c")
	// Parks again with nothing left over.
	waitFor(t, "the connection to park again", func() bool { return s.Parked() == 1 })
	c.get("/d")
}

// TestParkedConnectionIdleTimeout: a parked connection is closed at its
// idle timeout (the sweeper enforces it, within a second).
func TestParkedConnectionIdleTimeout(t *testing.T) {
	const idle = 4 * time.Second
	s := startServer(t, idle, nil)
	c := dial(t, s.addr)
	c.get("/a")
	answered := time.Now()
	waitFor(t, "the connection to park", func() bool { return s.Parked() == 1 })
	if !c.closedByServer() {
		t.Fatal("parked connection not closed at its idle timeout")
	}
	if d := time.Since(answered); d < idle {
		t.Errorf("closed %s after the answer, before the idle timeout %s", d, idle)
	}
	waitFor(t, "the connection to be forgotten", func() bool { return s.open() == 0 && s.Parked() == 0 })
	waitFor(t, "its goroutines to end", func() bool { return runtime.NumGoroutine() <= s.goroutines+4 })
}

// TestParkedConnectionClientHangsUp: a client that half-closes or resets a
// parked connection frees it at once; another parked one stays.
func TestParkedConnectionClientHangsUp(t *testing.T) {
	s := startServer(t, 0, nil)
	half, reset, stays := dial(t, s.addr), dial(t, s.addr), dial(t, s.addr)
	for _, c := range []*client{half, reset, stays} {
		c.get("/a")
	}
	waitFor(t, "the connections to park", func() bool { return s.Parked() == 3 })
	if err := half.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = reset.c.SetLinger(0)
	_ = reset.c.Close()
	waitFor(t, "the hung-up connections to be freed", func() bool { return s.open() == 1 && s.Parked() == 1 })
	if !half.closedByServer() {
		t.Error("half-closed connection not closed by the server")
	}
	stays.get("/b")
}

// TestShutdownClosesParked: Shutdown closes parked connections at once,
// lets a request in flight finish, and leaves no goroutine behind.
func TestShutdownClosesParked(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, 0, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "path="+r.URL.Path)
	})
	const n = 20
	parked := make([]*client, n)
	for i := range parked {
		parked[i] = dial(t, s.addr)
		parked[i].get("/a")
	}
	waitFor(t, "the connections to park", func() bool { return s.Parked() == n })
	busy := dial(t, s.addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	waitFor(t, "the slow request to begin", func() bool { return s.Served() == n+1 })
	shut := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { shut <- s.Shutdown(ctx) }()
	for i, c := range parked {
		if !c.closedByServer() {
			t.Fatalf("parked connection %d not closed at shutdown", i)
		}
	}
	close(release)
	busy.expect("/slow")
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if s.open() != 0 || s.Parked() != 0 {
		t.Fatalf("after shutdown: %d connections open, %d parked", s.open(), s.Parked())
	}
	waitFor(t, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= s.goroutines })
}

// TestCloseWhileParking: Close while connections park and wake ends every
// one of them (none is left registered with a closed socket).
func TestCloseWhileParking(t *testing.T) {
	s := startServer(t, 0, nil)
	const n = 50
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, s.addr)
		clients[i].get("/a")
	}
	// Some park while others are woken by requests.
	waitFor(t, "some connections to park", func() bool { return s.Parked() > 0 })
	for _, c := range clients[:n/2] {
		c.send("GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	_ = s.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("connections left after close: %d open, %d parked", s.open(), s.Parked())
	}
	waitFor(t, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= s.goroutines })
}

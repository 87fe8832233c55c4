package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/proxy/config"
)

// echo is what echoBackend answers: the request as the backend saw it.
type echo struct {
	Name    string      `json:"name"`
	Method  string      `json:"method"`
	Host    string      `json:"host"`
	Path    string      `json:"path"`
	URI     string      `json:"uri"` // the request target as received
	Query   string      `json:"query"`
	Proto   string      `json:"proto"`
	Header  http.Header `json:"header"`
	BodyLen int         `json:"body_len"`
	TE      []string    `json:"te"`
}

// echoBackend starts a loopback backend that answers every request with its
// echo, and returns its host:port.
func echoBackend(t testing.TB, name string) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		_ = json.NewEncoder(w).Encode(echo{Name: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, URI: r.RequestURI,
			Query: r.URL.RawQuery, Proto: r.Proto, Header: r.Header, BodyLen: int(n), TE: r.TransferEncoding})
	}))
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startProxy parses cfg, runs a proxy and returns it with the base URL of
// its listener named "web". It stops when the test ends.
func startProxy(t testing.TB, cfg string, opts Options) (*Proxy, string) {
	t.Helper()
	c, err := config.Parse([]byte(cfg))
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, cfg)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	p, err := New(c, opts)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("proxy did not stop")
		}
	})
	var runErr error
	testutil.Eventually(t, 5*time.Second, "proxy listening", func() bool {
		select {
		case runErr = <-done:
			return true
		default:
		}
		return p.Addrs()["web"] != nil
	})
	if runErr != nil || p.Addrs()["web"] == nil {
		t.Fatalf("proxy run: %v", runErr)
	}
	scheme := "http"
	for _, l := range c.Listeners {
		if l.Name == "web" && l.TLS != nil {
			scheme = "https"
		}
	}
	return p, scheme + "://" + p.Addrs()["web"].String()
}

// getEcho sends req through the client and decodes the backend's echo.
func getEcho(t *testing.T, c *http.Client, req *http.Request) (*http.Response, echo) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var e echo
	if resp.Header.Get("X-Backend") != "" {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("decode echo %q: %v", body, err)
		}
	}
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, e
}

func mustReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, cond)
}

// tcpSocket is one IPv4 TCP socket of this network namespace as
// /proc/net/tcp shows it.
type tcpSocket struct {
	state   int // TCP_ESTABLISHED 1, TCP_CLOSE_WAIT 8, ...
	rxQueue int // bytes received, not yet read by the owner
}

const tcpEstablished = 1

// findTCPSocket returns the socket with the local and remote addresses
// (both 127.0.0.1:port), or false when there is none (never made, or gone
// after a reset or close).
func findTCPSocket(t *testing.T, local, remote string) (tcpSocket, bool) {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hexAddr := func(a string) string {
		ap := netip.MustParseAddrPort(a)
		b := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], ap.Port())
	}
	l, r := hexAddr(local), hexAddr(remote)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != l || f[2] != r {
			continue
		}
		st, _ := strconv.ParseInt(f[3], 16, 32)
		_, rx, _ := strings.Cut(f[4], ":")
		q, _ := strconv.ParseInt(rx, 16, 64)
		return tcpSocket{state: int(st), rxQueue: int(q)}, true
	}
	return tcpSocket{}, false
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

package check_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/internal/testutil"
)

// httpBackend serves the paths the HTTP check tests probe. /slow answers
// only when the request is abandoned or the test ends.
func httpBackend(t *testing.T, tls bool) *httptest.Server {
	t.Helper()
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("status: all good\n")) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", http.StatusInternalServerError) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) })
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "followed", http.StatusTeapot) })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "svc.example" || r.UserAgent() != "xlb-health-check/1" {
			http.Error(w, "wrong host "+r.Host, http.StatusMisdirectedRequest)
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the tests provoke handshake errors
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv
}

// udpEcho answers every datagram with "pong:" and the datagram, except
// "mute", which it ignores.
func udpEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "mute" {
				continue
			}
			_, _ = pc.WriteTo(append([]byte("pong:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// unansweredSYN returns a loopback address whose listener has a full accept
// queue, so the kernel drops new SYNs and a connect hangs.
func unansweredSYN(t *testing.T) string {
	addr, _ := fullQueue(t)
	return addr
}

func fullQueue(t *testing.T) (string, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue: connect until a connect is not answered.
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			return addr, fd
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("accept queue of %s never filled", addr)
	return "", 0
}

// v6Listener returns the address of a listener on ::1, or skips the test
// when the host has no IPv6 loopback.
func v6Listener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go closeAccepted(ln, nil)
	return ln.Addr().String()
}

func TestProbes(t *testing.T) {
	web := httpBackend(t, false)
	webTLS := httpBackend(t, true)
	webAddr := web.Listener.Addr().String()
	tlsAddr := webTLS.Listener.Addr().String()
	hung, _ := hangListener(t)
	closed := closedPort(t)
	echo := udpEcho(t)
	short := 200 * time.Millisecond

	tests := []struct {
		name    string
		spec    check.Spec
		wantErr string // "" for a pass, else a substring of Result.Err
	}{
		{"tcp up", check.Spec{Kind: check.TCP, Target: webAddr}, ""},
		{"tcp refused", check.Spec{Kind: check.TCP, Target: closed}, "connection refused"},
		{"tcp syn unanswered", check.Spec{Kind: check.TCP, Target: unansweredSYN(t), Timeout: short}, "timeout after 200ms"},
		{"tcp accept and hang passes", check.Spec{Kind: check.TCP, Target: hung}, ""},
		{"tcp ipv6", check.Spec{Kind: check.TCP, Target: v6Listener(t)}, ""},
		{"tcp host name", check.Spec{Kind: check.TCP, Target: strings.Replace(webAddr, "127.0.0.1", "localhost", 1)}, ""},
		{"tcp host name refused", check.Spec{Kind: check.TCP, Target: strings.Replace(closed, "127.0.0.1", "localhost", 1)}, "refused"},

		{"http 200", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/ok"}, ""},
		{"http 500", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/fail"}, "status 500, want 200-399"},
		{"http 404", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/nothing"}, "status 404, want 200-399"},
		{"http redirect not followed", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/redirect"}, ""},
		{"http redirect outside range", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/redirect", StatusMax: 299}, "status 302, want 200-299"},
		{"http exact status", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/empty", StatusMin: 204, StatusMax: 204}, ""},
		{"http status range excludes", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/ok", StatusMin: 204, StatusMax: 204}, "status 200, want 204-204"},
		{"http 500 accepted by range", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/fail", StatusMin: 200, StatusMax: 599}, ""},
		{"http body contains", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/ok", BodyContains: "all good"}, ""},
		{"http body lacks", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/ok", BodyContains: "degraded"}, `body does not contain "degraded"`},
		{"http host header", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/host", Host: "svc.example"}, ""},
		{"http wrong host header", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/host"}, "status 421"},
		{"http slow answer", check.Spec{Kind: check.HTTP, Target: webAddr, Path: "/slow", Timeout: short}, "timeout after 200ms"},
		{"http accept and hang", check.Spec{Kind: check.HTTP, Target: hung, Timeout: short}, "timeout after 200ms"},
		{"http refused", check.Spec{Kind: check.HTTP, Target: closed}, "connection refused"},
		{"http to a tls server", check.Spec{Kind: check.HTTP, Target: tlsAddr, Path: "/ok"}, "status 400"},

		{"https unverified certificate", check.Spec{Kind: check.HTTPS, Target: tlsAddr, Path: "/ok"}, "certificate"},
		{"https insecure", check.Spec{Kind: check.HTTPS, Target: tlsAddr, Path: "/ok", InsecureSkipVerify: true}, ""},
		{"https insecure 500", check.Spec{Kind: check.HTTPS, Target: tlsAddr, Path: "/fail", InsecureSkipVerify: true}, "status 500"},
		{"https host header", check.Spec{Kind: check.HTTPS, Target: tlsAddr, Path: "/host", Host: "svc.example", InsecureSkipVerify: true}, ""},
		{"https to a plain server", check.Spec{Kind: check.HTTPS, Target: webAddr, Path: "/ok", InsecureSkipVerify: true}, "http: server gave HTTP response to HTTPS client"},

		{"udp reply", check.Spec{Kind: check.UDP, Target: echo, Payload: []byte("ping")}, ""},
		{"udp expected reply", check.Spec{Kind: check.UDP, Target: echo, Payload: []byte("ping"), Expect: []byte("pong:ping")}, ""},
		{"udp wrong reply", check.Spec{Kind: check.UDP, Target: echo, Payload: []byte("ping"), Expect: []byte("hello"), Timeout: short}, "timeout after 200ms"},
		{"udp no reply", check.Spec{Kind: check.UDP, Target: echo, Payload: []byte("mute"), Timeout: short}, "timeout after 200ms"},
		{"udp port unreachable", check.Spec{Kind: check.UDP, Target: closed, Payload: []byte("ping")}, "port unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := probeOnce(t, tt.spec)
			switch {
			case tt.wantErr == "" && r.Err != "":
				t.Fatalf("check failed: %s", r.Err)
			case tt.wantErr != "" && !strings.Contains(r.Err, tt.wantErr):
				t.Fatalf("check error = %q, want it to contain %q", r.Err, tt.wantErr)
			}
			if r.Latency <= 0 {
				t.Errorf("latency = %v, want > 0", r.Latency)
			}
		})
	}
}

// A connect whose SYN is dropped (full accept queue) and whose retransmission
// is answered finishes in the network poller, not in the socket call: the
// check's socket is seen in SYN-SENT, only then is the queue given room, and
// the check passes.
func TestTCPConnectFinishesLate(t *testing.T) {
	addr, fd := fullQueue(t)
	r := newRig(t, check.Config{})
	r.set(t, "b", check.Spec{Kind: check.TCP, Target: addr, Interval: time.Hour, Timeout: 10 * time.Second})
	r.start(t)
	r.clock.Advance(time.Hour)
	testutil.Eventually(t, 5*time.Second, "the check's connect to "+addr+" pending in SYN-SENT", func() bool {
		return synSent(t, addr)
	})
	nfd, _, err := syscall.Accept(fd) // room for the retransmitted SYN
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	syscall.Close(nfd)
	res := r.collect(t, "b")["b"]
	if res.Err != "" {
		t.Fatalf("check failed: %s", res.Err)
	}
	t.Logf("connect took %v", res.Latency)
}

// synSent reports whether a local TCP socket to addr (127.0.0.1:port) is in
// SYN-SENT, read from /proc/net/tcp.
func synSent(t *testing.T, addr string) bool {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X", ap.Port())
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == want && f[3] == "02" { // 02: TCP_SYN_SENT
			return true
		}
	}
	return false
}

// Checks leave no file descriptor open, whatever their outcome.
func TestProbesCloseDescriptors(t *testing.T) {
	up := newSwitchable(t)
	closed := closedPort(t)
	syn := unansweredSYN(t)
	r := newRig(t, check.Config{})
	specs := map[string]check.Spec{
		"up":      {Kind: check.TCP, Target: up.addr, Interval: time.Second},
		"refused": {Kind: check.TCP, Target: closed, Interval: time.Second},
		"syn":     {Kind: check.TCP, Target: syn, Interval: time.Second, Timeout: 20 * time.Millisecond},
		"http":    {Kind: check.HTTP, Target: closed, Interval: time.Second},
		"udp":     {Kind: check.UDP, Target: closed, Interval: time.Second},
	}
	var ids []string
	for id, s := range specs {
		r.set(t, id, s)
		ids = append(ids, id)
	}
	r.start(t)
	r.step(t, time.Second, ids...) // warm up: lazily opened runtime descriptors
	before := openFDs(t)
	for range 20 {
		r.step(t, time.Second, ids...)
	}
	if after := openFDs(t); after > before {
		t.Fatalf("open descriptors grew from %d to %d over 100 checks", before, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

package healthd

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/internal/testutil"
)

func TestAuthorize(t *testing.T) {
	const group = 1234
	tests := []struct {
		name  string
		peer  Peer
		group int
		want  Access
	}{
		{"root", Peer{UID: 0, GID: 0}, group, WriteAccess},
		{"root without group", Peer{UID: 0}, -1, WriteAccess},
		{"primary group member", Peer{UID: 1000, GID: group}, group, ReadAccess},
		{"supplementary member", Peer{UID: 1000, GID: 100, Groups: []uint32{27, group}}, group, ReadAccess},
		{"stranger", Peer{UID: 1000, GID: 100, Groups: []uint32{27}}, group, NoAccess},
		{"no group configured", Peer{UID: 1000, GID: 0}, -1, NoAccess},
	}
	for _, tt := range tests {
		if got := Authorize(tt.peer, tt.group); got != tt.want {
			t.Errorf("%s: Authorize = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// serveAPI serves a rig's daemon on a socket in a temporary directory.
// Only root may change through it; as non-root, tests may only read when
// the caller's group is the socket group.
func serveAPI(t *testing.T, r *rig) *api.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xlb.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(r.d, os.Getgid(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return api.NewClient(path)
}

func TestAPIRoundTrip(t *testing.T) {
	testutil.RequirePrivileged(t) // changes need uid 0 on the peer's side
	r := newRig(t, threeBackends)
	c := serveAPI(t, r)
	steps := []struct {
		name string
		fn   func() error
		want string // "" for success, else a substring of the error
	}{
		{"add vip", func() error {
			return c.AddVIP(api.VIPConfig{Address: "203.0.113.20:*/udp", Mode: "l2dsr", TableSize: 251})
		}, ""},
		{"add backend", func() error {
			return c.AddBackend("203.0.113.20:*/udp", api.BackendConfig{Address: "198.51.100.21", Weight: 3})
		}, ""},
		{"weight", func() error { return c.SetWeight("203.0.113.20:*/udp", "198.51.100.21", 4) }, ""},
		{"drain", func() error { return c.Drain("203.0.113.20:*/udp", "198.51.100.21", time.Minute) }, ""},
		{"undrain", func() error { return c.Undrain("203.0.113.20:*/udp", "198.51.100.21") }, ""},
		{"bad vip", func() error { return c.RemoveVIP("203.0.113.20:99999/udp") }, "vip: \"203.0.113.20:99999/udp\": port"},
		{"bad address", func() error { return c.Drain("203.0.113.20:*/udp", "bogus", 0) }, "address: \"bogus\" is not an IP address"},
		{"unknown vip", func() error { return c.RemoveVIP("203.0.113.99:80/tcp") }, "unknown VIP"},
		{"duplicate backend", func() error { return c.AddBackend("203.0.113.20:*/udp", api.BackendConfig{Address: "198.51.100.21"}) }, "already exists"},
		{"weight range", func() error { return c.SetWeight("203.0.113.20:*/udp", "198.51.100.21", 5000) }, "weight: 5000: allowed are 1-1000"},
		{"bad table size", func() error { return c.AddVIP(api.VIPConfig{Address: "203.0.113.21:80/tcp", TableSize: 1000}) }, "vip.table_size: 1000 is not a prime"},
		{"remove backend", func() error { return c.RemoveBackend("203.0.113.20:*/udp", "198.51.100.21") }, ""},
	}
	for _, s := range steps {
		err := s.fn()
		if s.want == "" && err != nil || s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)) {
			t.Fatalf("%s: error %v, want %q", s.name, err, s.want)
		}
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VIPs) != 2 || st.VIPs[1].Address != "203.0.113.20:*/udp" || len(st.VIPs[1].Backends) != 0 {
		t.Fatalf("status: %+v", st)
	}
	if _, err := c.Stats(); err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd"
	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/healthd/healthdtest"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/config/golden")

// stoppedClock is a fixed time; debounced work runs when the test calls
// flush.
type stoppedClock struct {
	mu      sync.Mutex
	pending []func()
}

var lastDuration = regexp.MustCompile(`("last_duration": |last reconcile )[0-9.e-]+`)

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (c *stoppedClock) Now() time.Time { return testNow }

func (c *stoppedClock) AfterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, f)
	return func() bool { return true }
}

func (c *stoppedClock) flush() {
	c.mu.Lock()
	p := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, f := range p {
		f()
	}
}

const cliConfig = `
vips:
  - address: 203.0.113.10:80/tcp
    table_size: 4093
    check: { kind: tcp, port: 80 }
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12, weight: 2 }
      - { address: 198.51.100.13, check: { kind: http, path: /healthz, port: 8080 } }
  - address: "[2001:db8:f::10]:443/tcp"
    mode: l2dsr
    table_size: 251
    hash: src-ip
    panic_threshold: 0
    backends:
      - { address: "2001:db8:1::11" }
`

type cliRig struct {
	d      *healthd.Daemon
	dp     *healthdtest.MemDatapath
	clock  *stoppedClock
	socket string
}

// newCLIRig runs a daemon on an in-memory datapath and serves its API on a
// socket whose group is the test's own, so reading needs no privilege.
// cannedProber runs no checks; it reports fixed check states: .11 passing,
// .12 failing and held down for flapping, the others nothing yet.
type cannedProber struct{}

func (cannedProber) Set(string, healthd.HealthCheck) error { return nil }
func (cannedProber) Remove(string)                         {}

func (cannedProber) CheckStatus(id string) (check.Status, bool) {
	result := func(ago time.Duration, err string) check.Result {
		return check.Result{Time: testNow.Add(-ago), Latency: time.Millisecond, Err: err}
	}
	switch {
	case strings.Contains(id, "198.51.100.11:"):
		return check.Status{History: []check.Result{result(4*time.Second, ""), result(2*time.Second, "")}}, true
	case strings.Contains(id, "198.51.100.12:"):
		refused := "connect: connection refused"
		return check.Status{Damped: true, History: []check.Result{result(6*time.Second, ""), result(4*time.Second, refused), result(2*time.Second, refused)}}, true
	}
	return check.Status{}, false
}

func newCLIRig(t *testing.T) *cliRig {
	t.Helper()
	r := &cliRig{dp: healthdtest.NewMemDatapath(), clock: &stoppedClock{}}
	d, err := healthd.New(healthd.Options{Datapath: r.dp, Prober: cannedProber{}, Clock: r.clock, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := healthd.ParseConfig([]byte(cliConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(c); err != nil {
		t.Fatal(err)
	}
	r.d = d
	// Health: .11 healthy, .12 unhealthy, .13 unknown (panic: 1 of 3).
	for _, v := range d.Status().VIPs {
		for _, b := range v.Backends {
			switch b.Address {
			case "198.51.100.11":
				d.HealthChanged(b.Check, healthd.HealthHealthy, "", testNow.Add(-90*time.Second))
			case "198.51.100.12":
				d.HealthChanged(b.Check, healthd.HealthUnhealthy, "connect: connection refused", testNow.Add(-5*time.Second))
			}
		}
	}
	r.clock.flush()
	r.dp.Lock()
	r.dp.BackendCount[1] = loader.Counters{Packets: 600, Bytes: 38400}
	r.dp.Retired[0] = loader.Counters{Packets: 400, Bytes: 25600} // the VIP: 1000 packets
	r.dp.DropCount["no_vip"] = 12
	r.dp.DropCount["bad_header"] = 3
	r.dp.Unlock()

	r.socket = filepath.Join(t.TempDir(), "xlb.sock")
	l, err := net.Listen("unix", r.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = healthd.NewServer(d, os.Getgid(), slog.New(slog.DiscardHandler)).Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "..", "testdata", "config", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/xlb -run Golden -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestGoldenOutputs(t *testing.T) {
	r := newCLIRig(t)
	tests := []struct {
		file string
		args []string
	}{
		{"status.txt", []string{"status"}},
		{"status.json", []string{"status", "-o", "json"}},
		{"vip-list.txt", []string{"vip", "list"}},
		{"vip-list.json", []string{"vip", "list", "-o", "json"}},
		{"backend-list.txt", []string{"backend", "list"}},
		{"backend-list-one.json", []string{"backend", "list", "203.0.113.10:80/tcp", "-o", "json"}},
		{"stats.txt", []string{"stats"}},
		{"stats.json", []string{"stats", "-o", "json"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			code, out, errOut := runCLI(t, append(tt.args, "--socket", r.socket)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			// The reconcile time is the one thing not fixed by the fake clock.
			out = lastDuration.ReplaceAllString(out, "${1}0.000")
			golden(t, tt.file, out)
		})
	}
}

// Bad input is one line on stderr, a non-zero exit, and changes nothing.
func TestBadInput(t *testing.T) {
	r := newCLIRig(t)
	before := r.d.Status()
	sock := []string{"--socket", r.socket}
	missing := []string{"--socket", filepath.Join(t.TempDir(), "none.sock")}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"vip add no arg", []string{"vip", "add"}, 2, "missing arguments: want ADDR:PORT/PROTO"},
		{"vip add bad address", []string{"vip", "add", "203.0.113.300:80/tcp"}, 2, "VIP: \"203.0.113.300:80/tcp\""},
		{"vip add ipv6 without brackets", []string{"vip", "add", "2001:db8:f::1:80/tcp"}, 2, "IPv6 goes in brackets"},
		{"vip add bad proto", []string{"vip", "add", "203.0.113.1:80/icmp"}, 2, "allowed are tcp, udp"},
		{"vip add bad table", []string{"vip", "add", "203.0.113.1:80/tcp", "--table-size", "abc"}, 2, "table-size"},
		{"vip add table not prime", append([]string{"vip", "add", "203.0.113.1:80/tcp", "--table-size", "1000"}, missing...), 2, "vip.table_size: 1000 is not a prime: allowed are 251, 4093, 65537"},
		{"vip add bad mode", append([]string{"vip", "add", "203.0.113.1:80/tcp", "--mode", "nat"}, missing...), 2, `vip.mode: "nat": allowed are ipip, l2dsr`},
		{"vip remove extra", []string{"vip", "remove", "203.0.113.10:80/tcp", "x"}, 2, `unexpected argument "x"`},
		{"backend add bad addr", []string{"backend", "add", "203.0.113.10:80/tcp", "198.51.100"}, 2, "backend address"},
		{"backend add bad check", []string{"backend", "add", "203.0.113.10:80/tcp", "198.51.100.20", "--check", "icmp"}, 2, "--check \"icmp\": allowed are tcp, http:PATH, https:PATH"},
		{"backend add weight", []string{"backend", "add", "203.0.113.10:80/tcp", "198.51.100.20", "--weight", "0"}, 2, "--weight 0: allowed are 1-1000"},
		{"backend add interval", []string{"backend", "add", "203.0.113.10:80/tcp", "198.51.100.20", "--interval", "often"}, 2, "--interval \"often\""},
		{"backend weight range", []string{"backend", "weight", "203.0.113.10:80/tcp", "198.51.100.11", "5000"}, 2, `weight "5000": allowed are 1-1000`},
		{"backend weight missing", []string{"backend", "weight", "203.0.113.10:80/tcp", "198.51.100.11"}, 2, "missing arguments: want VIP ADDR N"},
		{"drain bad timeout", []string{"backend", "drain", "203.0.113.10:80/tcp", "198.51.100.11", "--timeout", "-1s"}, 2, "--timeout \"-1s\""},
		{"backend list unknown vip", append([]string{"backend", "list", "203.0.113.99:80/tcp"}, sock...), 1, "unknown VIP"},
		{"stats bad interval", []string{"stats", "--interval", "0s"}, 2, "--interval 0s"},
		{"daemon not running", append([]string{"status"}, missing...), 1, "daemon not running"},
		{"daemon check-config without config", []string{"daemon", "--check-config"}, 2, "--check-config needs the configuration: --check-config FILE"},
		{"daemon bad config", []string{"daemon", "--check-config", "--config", "../../testdata/config/bad-table-size.yaml"}, 1, "line 4: vips[0].table_size: 1000 is not a prime"},
		{"daemon missing interface", []string{"daemon", "--check-config", "--config", "../../testdata/config/no-interface.yaml"}, 1, "interface: missing: give --iface"},
		{"daemon bad log level", []string{"daemon", "--log-level", "loud"}, 2, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q, stdout %q)", code, tt.code, errOut, out)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr %q does not contain %q", errOut, tt.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("error spans lines: %q", errOut)
			}
		})
	}
	after := r.d.Status()
	if len(after.VIPs) != len(before.VIPs) || len(after.VIPs[0].Backends) != len(before.VIPs[0].Backends) {
		t.Fatal("bad input changed the state")
	}
}

func TestCheckConfig(t *testing.T) {
	code, out, errOut := runCLI(t, "daemon", "--check-config", "--config", "../../testdata/xlb.yaml")
	if code != 0 || !strings.Contains(out, "ok: 2 VIPs, interface veth0") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "daemon", "--check-config", "--config", "../../testdata/config/no-interface.yaml", "--iface", "eth9")
	if code != 0 || !strings.Contains(out, "interface eth9") {
		t.Fatalf("--iface does not override: exit %d, %q", code, out)
	}
}

// Changes through the CLI need root on the peer's side.
func TestChangesThroughCLI(t *testing.T) {
	testutil.RequirePrivileged(t)
	r := newCLIRig(t)
	sock := []string{"--socket", r.socket}
	steps := []struct {
		args []string
		code int
		want string // in stdout on success, in stderr on failure
	}{
		{[]string{"vip", "add", "203.0.113.20:*/udp", "--mode", "l2dsr", "--table-size", "251", "--panic-threshold", "0"}, 0, "added vip 203.0.113.20:*/udp"},
		{[]string{"vip", "add", "203.0.113.20:*/udp"}, 1, "already exists"},
		{[]string{"vip", "add", "203.0.113.21:80/tcp", "--table-size", "4099"}, 2, "4099 is a prime the datapath does not hold"}, // refused before the daemon is asked
		{[]string{"backend", "add", "203.0.113.20:*/udp", "198.51.100.21", "--weight", "3", "--check", "tcp", "--check-port", "53"}, 0, "added backend 198.51.100.21"},
		{[]string{"backend", "add", "203.0.113.20:*/udp", "198.51.100.22", "--check", "http:/health", "--check-port", "80", "--interval", "500ms"}, 0, "added backend"},
		{[]string{"backend", "add", "203.0.113.20:*/udp", "198.51.100.21"}, 1, "already exists"},
		{[]string{"backend", "add", "203.0.113.20:*/udp", "2001:db8:1::5"}, 1, "address family must match"},
		{[]string{"backend", "add", "203.0.113.99:80/tcp", "198.51.100.21"}, 1, "unknown VIP"},
		{[]string{"backend", "weight", "203.0.113.20:*/udp", "198.51.100.21", "7"}, 0, "has weight 7"},
		{[]string{"backend", "drain", "203.0.113.20:*/udp", "198.51.100.21", "--timeout", "1m"}, 0, "draining backend 198.51.100.21"},
		{[]string{"backend", "undrain", "203.0.113.20:*/udp", "198.51.100.21"}, 0, "is active"},
		{[]string{"backend", "undrain", "203.0.113.20:*/udp", "198.51.100.21"}, 1, "not draining"},
		{[]string{"backend", "remove", "203.0.113.20:*/udp", "198.51.100.22"}, 0, "removed backend"},
		{[]string{"backend", "remove", "203.0.113.20:*/udp", "198.51.100.22"}, 1, "unknown backend"},
		{[]string{"vip", "remove", "203.0.113.10:80/tcp"}, 0, "removed vip"},
	}
	for _, s := range steps {
		code, out, errOut := runCLI(t, append(s.args, sock...)...)
		if code != s.code {
			t.Fatalf("xlb %s: exit %d, want %d (stderr %q)", strings.Join(s.args, " "), code, s.code, errOut)
		}
		where := out
		if code != 0 {
			where = errOut
		}
		if !strings.Contains(where, s.want) {
			t.Fatalf("xlb %s: output %q does not contain %q", strings.Join(s.args, " "), where, s.want)
		}
	}
	st := r.d.Status()
	if len(st.VIPs) != 2 || st.VIPs[0].Address != "203.0.113.20:*/udp" || len(st.VIPs[0].Backends) != 1 ||
		st.VIPs[0].Backends[0].Weight != 7 || st.VIPs[0].Backends[0].Admin != "active" {
		t.Fatalf("state after the CLI session: %+v", st.VIPs)
	}
}

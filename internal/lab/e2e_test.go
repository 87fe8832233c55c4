package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// End-to-end tests: the lab as a user runs it. Every balancer runs the real
// "xlb daemon" built in TestMain, the test drives it only through the xlb
// CLI, and real TCP and UDP connections go from the client through xdp_lb
// on the balancer's veth to the echo servers on the backends.

var (
	vipTCP  = fmt.Sprintf("%s:%d/tcp", VIP4, EchoPort)
	echoVIP = netip.AddrPortFrom(VIP4, EchoPort)
)

// backendJSON is the part of "xlb backend list -o json" the tests read.
type backendJSON struct {
	VIP     string `json:"vip"`
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Admin   string `json:"admin"`
	Health  string `json:"health"`
	// UsableNew: the datapath may send it new flows.
	UsableNew bool `json:"usable_new"`
	// NextHopErr: the daemon could not resolve the backend's MAC.
	NextHopErr string `json:"next_hop_error"`
}

// e2eLab is a lab whose balancers run the daemon with the given config.
func e2eLab(t *testing.T, cfg Config, dc DaemonConfig) *Lab {
	t.Helper()
	l := newLab(t, cfg)
	for _, b := range l.Balancers {
		if err := l.StartDaemon(context.Background(), b.Name, dc); err != nil {
			t.Fatal(err)
		}
	}
	want := len(l.Backends) * len(dc.VIPs())
	for _, b := range l.Balancers {
		testutil.Eventually(t, 15*time.Second, fmt.Sprintf("every backend of every VIP healthy and usable on %s", b.Name), func() bool {
			return usableBackends(l, b.Name) == want
		})
	}
	return l
}

// usableBackends counts the healthy backends the datapath may send new flows
// to, over every VIP of a balancer; 0 while its daemon does not answer.
func usableBackends(l *Lab, balancer string) int {
	out, err := l.CLI(context.Background(), balancer, "backend", "list", "-o", "json")
	if err != nil {
		return 0
	}
	var bs []backendJSON
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		return 0
	}
	n := 0
	for _, be := range bs {
		if be.Health == "healthy" && be.UsableNew && be.NextHopErr == "" {
			n++
		}
	}
	return n
}

func cli(t *testing.T, l *Lab, balancer string, args ...string) string {
	t.Helper()
	out, err := l.CLI(context.Background(), balancer, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// listBackends lists the backends of vip, or of every VIP for "".
func listBackends(t *testing.T, l *Lab, balancer, vip string) []backendJSON {
	t.Helper()
	var bs []backendJSON
	args := []string{"backend", "list", "-o", "json"}
	if vip != "" {
		args = append(args, vip)
	}
	out := cli(t, l, balancer, args...)
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		t.Fatalf("parse backend list: %v\n%s", err, out)
	}
	return bs
}

// addrOf returns a backend's IPv4 address by name.
func addrOf(l *Lab, name string) string {
	h, _ := l.Host(name)
	return h.IPv4.String()
}

// TestE2EDistribution: 3,000 new TCP connections over three equal
// backends, then weighted 1:2:3 with "xlb backend weight"; every share
// within 5 percentage points.
func TestE2EDistribution(t *testing.T) {
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{})
	counts := spread(t, l, echoVIP, 3000)
	t.Logf("equal weights: %v", counts)
	checkShares(t, counts, map[string]float64{"be1": 1.0 / 3, "be2": 1.0 / 3, "be3": 1.0 / 3}, 5)

	for i, be := range l.Backends {
		cli(t, l, "lb1", "backend", "weight", vipTCP, be.IPv4.String(), fmt.Sprint(i+1))
	}
	testutil.Eventually(t, 5*time.Second, "weights applied", func() bool {
		for _, b := range listBackends(t, l, "lb1", vipTCP) {
			if b.Weight == 1 && b.Address != addrOf(l, "be1") {
				return false
			}
		}
		return true
	})
	counts = spread(t, l, echoVIP, 3000)
	t.Logf("weights 1:2:3: %v", counts)
	checkShares(t, counts, map[string]float64{"be1": 1.0 / 6, "be2": 2.0 / 6, "be3": 3.0 / 6}, 5)
}

// TestE2EFamiliesAndModes: TCP and UDP VIPs in both families reach every
// backend, with IPIP and with L2 DSR.
func TestE2EFamiliesAndModes(t *testing.T) {
	for _, mode := range []string{"ipip", "l2dsr"} {
		t.Run(mode, func(t *testing.T) {
			l := e2eLab(t, Config{Backends: 2}, DaemonConfig{IPv6: true, Mode: mode})
			c := Client{Netns: l.Client.Netns}
			for _, vip := range []netip.Addr{VIP4, VIP6} {
				for _, proto := range []string{"tcp", "udp"} {
					ap := netip.AddrPortFrom(vip, EchoPort)
					seen := map[string]int{}
					for i := range 30 {
						var name string
						var err error
						if proto == "tcp" {
							name, err = c.Hello(ap)
						} else {
							name, err = c.UDP(ap, fmt.Sprintf("datagram %d", i))
						}
						if err != nil {
							t.Fatalf("%s %s: %v", proto, ap, err)
						}
						seen[name]++
					}
					if len(seen) != len(l.Backends) {
						t.Errorf("%s %s: 30 flows reached %v, want every backend", proto, ap, seen)
					}
				}
			}
			// HTTP over the IPv6 VIP as well.
			if _, err := c.HTTPGet(context.Background(), netip.AddrPortFrom(VIP6, HTTPPort)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestE2EDrain: a connection opened before the drain keeps exchanging data;
// no new connection reaches the drained backend; it leaves after the
// timeout, and the VIP's packet count keeps what it forwarded.
func TestE2EDrain(t *testing.T) {
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{})
	c := Client{Netns: l.Client.Netns}
	conn, err := c.Open(echoVIP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	drained := conn.Backend
	const timeout = 4 * time.Second
	cli(t, l, "lb1", "backend", "drain", vipTCP, addrOf(l, drained), "--timeout", timeout.String())
	drainStart := time.Now()
	testutil.Eventually(t, 5*time.Second, "drain applied", func() bool {
		for _, b := range listBackends(t, l, "lb1", vipTCP) {
			if b.Address == addrOf(l, drained) {
				return b.Admin == "draining"
			}
		}
		return false
	})

	for i := range 10 {
		if err := conn.Echo(fmt.Sprintf("after drain %d", i)); err != nil {
			t.Fatalf("connection to draining %s: %v", drained, err)
		}
	}
	counts := spread(t, l, echoVIP, 300)
	if counts[drained] != 0 {
		t.Errorf("%d new connections reached draining %s (%v)", counts[drained], drained, counts)
	}
	if err := conn.Echo("still there"); err != nil {
		t.Fatalf("connection to draining %s: %v", drained, err)
	}
	before := vipPackets(t, l, "lb1", vipTCP)
	testutil.Eventually(t, timeout+10*time.Second, drained+" removed after the drain timeout", func() bool {
		return !slices.ContainsFunc(listBackends(t, l, "lb1", vipTCP), func(b backendJSON) bool {
			return b.Address == addrOf(l, drained)
		})
	})
	t.Logf("drained backend left %s after the drain (timeout %s)", time.Since(drainStart).Round(10*time.Millisecond), timeout)
	// The datapath counts per backend: the VIP's total must keep the
	// packets of the backend that left.
	if after := vipPackets(t, l, "lb1", vipTCP); before == 0 || after < before {
		t.Errorf("vip %s forwarded %d packets before %s left and %d after; want a total that keeps them", vipTCP, before, drained, after)
	}
}

// TestE2EFailover: once a backend's server is killed, no new connection
// reaches it after fall × interval + 1s; back up, it rejoins after rise.
func TestE2EFailover(t *testing.T) {
	const interval, rise, fall = 500 * time.Millisecond, 2, 2
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{CheckInterval: interval, Rise: rise, Fall: fall})
	c := Client{Netns: l.Client.Netns, Timeout: time.Second}
	victim := "be2"

	if err := l.KillServer(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Until the daemon takes it out, connections hashed to the victim are
	// refused; measure when the last one was.
	var lastFail time.Duration
	deadline := fall*interval + time.Second
	for time.Since(killed) < deadline+time.Second {
		if _, err := c.Hello(echoVIP); err != nil {
			lastFail = time.Since(killed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("killed %s: last failed connection %s after the kill (budget fall×interval+1s = %s)", victim, lastFail.Round(time.Millisecond), deadline)
	if lastFail > deadline {
		t.Errorf("connections still reached the dead %s %s after the kill, want at most %s", victim, lastFail, deadline)
	}
	counts := spread(t, l, echoVIP, 300)
	if counts[victim] != 0 {
		t.Errorf("%d connections reached the dead %s", counts[victim], victim)
	}

	if err := l.StartServer(victim); err != nil {
		t.Fatal(err)
	}
	back := testutil.Eventually(t, 10*time.Second, victim+" rejoining", func() bool {
		name, err := c.Hello(echoVIP)
		return err == nil && name == victim
	})
	t.Logf("restarted %s: first new connection to it %s after the restart (rise×interval = %s)", victim, back.Round(time.Millisecond), rise*interval)
	if back > rise*interval+2*time.Second {
		t.Errorf("%s rejoined %s after its restart, want about rise×interval = %s", victim, back, rise*interval)
	}
}

// TestE2EHitlessRestart: restarting the daemon, and upgrading it (a new
// binary taking over the pinned link), while new connections arrive
// continuously and a long-lived one is open: no connection fails and the
// long-lived one keeps its backend.
func TestE2EHitlessRestart(t *testing.T) {
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{})
	c := Client{Netns: l.Client.Netns}
	long, err := c.Open(echoVIP)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	// "Upgrade": a second binary at another path; the daemon started from
	// it loads its own program and swaps it in through the pinned link.
	upgrade := filepath.Join(t.TempDir(), "xlb-new")
	b, err := os.ReadFile(xlbBinary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(upgrade, b, 0o755); err != nil {
		t.Fatal(err)
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := c.Hello(echoVIP); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			} else {
				ok.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	// progress waits for more connections to succeed: traffic flows in the
	// phase the test is in.
	progress := func(what string) {
		t.Helper()
		from := ok.Load()
		testutil.Eventually(t, 10*time.Second, "20 more connections "+what, func() bool { return ok.Load() >= from+20 })
	}
	want := usableBackends(l, "lb1")
	for i, bin := range []string{xlbBinary, upgrade} {
		progress(fmt.Sprintf("before stop %d", i))
		if err := long.Echo(fmt.Sprintf("before stop %d", i)); err != nil {
			t.Errorf("long-lived connection before stop %d: %v", i, err)
		}
		if err := l.StopDaemon("lb1"); err != nil {
			t.Fatal(err)
		}
		progress("while the daemon is down")
		if err := long.Echo(fmt.Sprintf("daemon down %d", i)); err != nil {
			t.Errorf("long-lived connection while the daemon is down: %v", err)
		}
		if err := l.RunDaemon(context.Background(), "lb1", bin); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 15*time.Second, fmt.Sprintf("the daemon started from %s reporting all %d backends usable", filepath.Base(bin), want), func() bool {
			return usableBackends(l, "lb1") == want
		})
		progress(fmt.Sprintf("after restart %d", i))
		if err := long.Echo(fmt.Sprintf("daemon back %d", i)); err != nil {
			t.Errorf("long-lived connection after restart %d: %v", i, err)
		}
	}
	progress("after the upgrade")
	stop()
	wg.Wait()
	t.Logf("%d connections during two restarts, %d failed; long-lived connection stayed on %s", ok.Load(), failed.Load(), long.Backend)
	if failed.Load() > 0 {
		t.Errorf("%d connections failed during restart/upgrade; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 50 {
		t.Errorf("only %d connections made during the restarts; the test proves little", ok.Load())
	}
}

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestFleetBGP: three balancers announce the VIPs over BGP (GoBGP in the
// daemon) to an FRR router, which spreads the client's connections over
// them with ECMP (5-tuple hash). Every scenario of a fleet in one lab, in
// order: spread, fleet-check, a VIP failing on one balancer only,
// drain-self, graceful stop, SIGKILL of a daemon, death of a host. The
// figures (connections per balancer, failures, convergence times) are
// logged; the hold timer is 3 s (keepalive 1 s).
func TestFleetBGP(t *testing.T) {
	l := newLab(t, Config{Routed: true, Balancers: 3, Backends: 3})
	ctx := context.Background()
	if err := l.StartRouter(ctx, RouterConfig{}); err != nil {
		t.Fatal(err)
	}
	dc := DaemonConfig{IPv6: true, BGP: true, CheckInterval: 500 * time.Millisecond,
		GracefulShutdownWait: time.Second, LeaveWait: time.Second}
	for _, b := range l.Balancers {
		if err := l.StartDaemon(ctx, b.Name, dc); err != nil {
			t.Fatal(err)
		}
	}
	all := []string{"lb1", "lb2", "lb3"}
	took := waitRoutes(t, l, VIP4, all, 30*time.Second)
	waitRoutes(t, l, VIP6, all, 10*time.Second)
	t.Logf("router: ECMP routes to %s and %s over lb1, lb2, lb3 %.1fs after the daemons started", VIP4, VIP6, took.Seconds())

	t.Run("spread", func(t *testing.T) {
		before := packetsPerBalancer(t, l)
		counts := spread(t, l, echoVIP, 3000) // fails on any failed connection
		after := packetsPerBalancer(t, l)
		var total float64
		delta := map[string]float64{}
		for _, b := range all {
			delta[b] = float64(after[b] - before[b])
			total += delta[b]
		}
		var shares []string
		for _, b := range all {
			share := 100 * delta[b] / total
			shares = append(shares, fmt.Sprintf("%s %.1f%% (~%.0f connections)", b, share, 3000*share/100))
			if math.Abs(share-100.0/3) > 10 {
				t.Errorf("%s forwarded %.1f%% of the packets of 3,000 connections, want 33.3%% ± 10 pp", b, share)
			}
		}
		t.Logf("3,000 connections through the router, all succeeded; per balancer (share of forwarded packets): %s; per backend %v",
			strings.Join(shares, ", "), counts)
	})

	t.Run("fleet-check", func(t *testing.T) {
		var socks []string
		for _, b := range all {
			socks = append(socks, "--peer", l.DaemonPaths(b).Socket)
		}
		lb1 := l.Balancers[0]
		out, err := l.runIn(lb1, append([]string{"fleet-check"}, socks...)...)
		if err != nil || !strings.HasPrefix(out, "OK: 6 VIPs") {
			t.Fatalf("fleet-check over sockets: %v\n%s", err, out)
		}
		// By URL, from the client side of the router: the daemons' metrics
		// listeners serve the report.
		var urls []string
		for _, b := range l.Balancers {
			urls = append(urls, "--peer", fmt.Sprintf("http://%s", netip.AddrPortFrom(b.IPv4, MetricsPort)))
		}
		out, err = l.runIn(l.Client, append([]string{"fleet-check"}, urls...)...)
		if err != nil || !strings.HasPrefix(out, "OK: 6 VIPs") {
			t.Fatalf("fleet-check over URLs: %v\n%s", err, out)
		}
		be1 := addrOf(l, "be1")
		cliOK(t, l, "lb3", "backend", "weight", vipTCP, be1, "2")
		out, err = l.runIn(lb1, append([]string{"fleet-check"}, socks...)...)
		if err == nil || !strings.Contains(out, "VIP "+vipTCP) || !strings.Contains(out, "weight of "+be1+" differs") {
			t.Fatalf("fleet-check with another weight on lb3: err %v, want a failure naming %s and the weight:\n%s", err, vipTCP, out)
		}
		t.Logf("fleet-check with weight 2 on lb3:\n%s", out)
		cliOK(t, l, "lb3", "backend", "weight", vipTCP, be1, "1")
	})

	t.Run("vip fails on one balancer only", func(t *testing.T) {
		// lb3's health checks see every backend down (its routes to them
		// are blackholed), the others see them up: lb3 withdraws the VIPs.
		lb3 := l.Balancers[2]
		for _, be := range l.Backends {
			blackhole(t, lb3, be.IPv4, true)
			blackhole(t, lb3, be.IPv6, true)
		}
		took := waitRoutes(t, l, VIP4, []string{"lb1", "lb2"}, 15*time.Second)
		waitRoutes(t, l, VIP6, []string{"lb1", "lb2"}, 5*time.Second)
		if st := bgpStatus(t, l, "lb3"); addrState(st, VIP4) != "no" {
			t.Fatalf("lb3 status: %s is %q, want withdrawn", VIP4, addrState(st, VIP4))
		}
		t.Logf("backends unreachable from lb3 only: its routes left the router after %.1fs; lb1, lb2 keep them", took.Seconds())
		spread(t, l, echoVIP, 300)
		for _, be := range l.Backends {
			blackhole(t, lb3, be.IPv4, false)
			blackhole(t, lb3, be.IPv6, false)
		}
		waitRoutes(t, l, VIP4, all, 15*time.Second)
	})

	t.Run("drain-self", func(t *testing.T) {
		side, err := l.AddSideClient("lb1")
		if err != nil {
			t.Fatal(err)
		}
		sc := Client{Netns: side.Netns}
		held, err := sc.Open(echoVIP) // established through lb1 before the drain
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		load := startLoad(t, l)
		cliOK(t, l, "lb1", "drain-self")
		took := waitRoutes(t, l, VIP4, []string{"lb2", "lb3"}, 10*time.Second)
		load.atLeast(t, 200)
		st := bgpStatus(t, l, "lb1")
		if !st.Drained {
			t.Fatalf("lb1 status after drain-self: %+v", st)
		}
		testutil.Eventually(t, 10*time.Second, "lb1's routes withdrawn after the graceful-shutdown wait", func() bool {
			return addrState(bgpStatus(t, l, "lb1"), VIP4) == "no"
		})
		before := vipPackets(t, l, "lb1", vipTCP)
		if err := held.Echo("after drain-self"); err != nil {
			t.Fatalf("established flow arriving at drained lb1: %v", err)
		}
		if name, err := sc.Hello(echoVIP); err != nil {
			t.Fatalf("new flow arriving at drained lb1: %q, %v", name, err)
		}
		if after := vipPackets(t, l, "lb1", vipTCP); after <= before {
			t.Fatalf("lb1 forwarded nothing after drain-self (%d -> %d packets)", before, after)
		}
		res := load.stop()
		if res.failed > 0 {
			t.Fatalf("drain-self: %d of %d connections failed; first: %v", res.failed, res.total, res.firstErr)
		}
		t.Logf("drain-self: lb1's route left the router after %.2fs (GRACEFUL_SHUTDOWN), %d connections during it, none failed; flows still arriving at lb1 forwarded", took.Seconds(), res.total)
		cliOK(t, l, "lb1", "undrain-self")
		waitRoutes(t, l, VIP4, all, 10*time.Second)
	})

	t.Run("graceful stop", func(t *testing.T) {
		c := Client{Netns: l.Client.Netns}
		var held []*Conn
		for range 30 {
			conn, err := c.Open(echoVIP)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			held = append(held, conn)
		}
		load := startLoad(t, l)
		start := time.Now()
		if err := l.SignalDaemon("lb1", syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var routeGone, exited time.Duration
		testutil.Eventually(t, 20*time.Second, "lb1's daemon exited after its route left", func() bool {
			if routeGone == 0 && !slices.Contains(hopNames(t, l, VIP4), "lb1") {
				routeGone = time.Since(start)
			}
			if exited == 0 && l.DaemonPID("lb1") == 0 {
				exited = time.Since(start)
			}
			return routeGone != 0 && exited != 0
		})
		if routeGone >= exited {
			t.Fatalf("lb1's route left the router %.2fs after SIGTERM, the daemon exited after %.2fs: want the route gone first", routeGone.Seconds(), exited.Seconds())
		}
		// The host goes away: its datapath stops forwarding.
		out, err := l.Command(ctx, "lb1", "daemon", "--cleanup", "--bpffs", l.DaemonPaths("lb1").BPFFS).CombinedOutput()
		if err != nil {
			t.Fatalf("detach lb1: %v: %s", err, out)
		}
		for i, conn := range held {
			if err := conn.Echo("after lb1 left"); err != nil {
				t.Fatalf("long-lived connection %d (backend %s) after lb1 left: %v", i, conn.Backend, err)
			}
		}
		res := load.stop()
		if res.failed > 0 {
			t.Fatalf("graceful stop: %d of %d connections failed; first: %v", res.failed, res.total, res.firstErr)
		}
		t.Logf("graceful stop of lb1: route gone %.2fs after SIGTERM, daemon exited %.2fs after; %d new connections and 30 long-lived ones (kept their backends) without a failure",
			routeGone.Seconds(), exited.Seconds(), res.total)
	})

	t.Run("sigkill", func(t *testing.T) {
		load := startLoad(t, l)
		if err := l.KillDaemon("lb2"); err != nil {
			t.Fatal(err)
		}
		took := waitRoutes(t, l, VIP4, []string{"lb3"}, 10*time.Second)
		load.atLeast(t, 200)
		res := load.stop()
		t.Logf("SIGKILL of lb2's daemon: the kernel closed its BGP session, the router converged in %.2fs; %d of %d connections failed (its pinned datapath kept forwarding)",
			took.Seconds(), res.failed, res.total)
		if res.failed > 0 {
			t.Errorf("SIGKILL of a daemon: %d connections failed; first: %v", res.failed, res.firstErr)
		}
		if err := l.RunDaemon(ctx, "lb2", l.cfg.Binary); err != nil {
			t.Fatal(err)
		}
		took = waitRoutes(t, l, VIP4, []string{"lb2", "lb3"}, 30*time.Second)
		t.Logf("lb2's daemon restarted (adopting its pins): announced again after %.1fs", took.Seconds())
	})

	t.Run("host dies", func(t *testing.T) {
		c := Client{Netns: l.Client.Netns, Timeout: 10 * time.Second}
		var held []*Conn
		for range 20 {
			conn, err := c.Open(echoVIP)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			held = append(held, conn)
		}
		load := startLoad(t, l)
		if err := l.Isolate("lb2"); err != nil {
			t.Fatal(err)
		}
		if err := l.KillDaemon("lb2"); err != nil {
			t.Fatal(err)
		}
		took := waitRoutes(t, l, VIP4, []string{"lb3"}, 15*time.Second)
		load.atLeast(t, 500)
		res := load.stop()
		t.Logf("lb2 dead (link down, daemon killed): the router's hold timer (3s) expired, converged after %.2fs; of %d connections (100/s, 5s connect timeout) %d failed, %d waited for a SYN retransmission (slowest %.2fs)",
			took.Seconds(), res.total, res.failed, res.slow, res.slowest.Seconds())
		if res.slow == 0 {
			t.Errorf("no connection was delayed while the router still sent to the dead lb2: was it isolated?")
		}
		// Established flows that went through lb2 continue through lb3 with
		// their backends (TCP retransmits what was lost meanwhile).
		for i, conn := range held {
			if err := conn.Echo("after lb2 died"); err != nil {
				t.Fatalf("long-lived connection %d (backend %s) after lb2 died: %v", i, conn.Backend, err)
			}
		}
		if took < 2*time.Second {
			t.Errorf("converged after %.2fs without a session close: want the 3s hold timer", took.Seconds())
		}
	})
}

// waitRoutes waits until the router's route to vip spreads over exactly
// the named balancers and returns how long that took.
func waitRoutes(t *testing.T, l *Lab, vip netip.Addr, want []string, limit time.Duration) time.Duration {
	t.Helper()
	var got []string
	return testutil.Eventually(t, limit, fmt.Sprintf("router's route to %s over %v", vip, want), func() bool {
		got = hopNames(t, l, vip)
		return slices.Equal(got, want)
	})
}

// hopNames names the balancers the router's route to vip uses, sorted.
func hopNames(t *testing.T, l *Lab, vip netip.Addr) []string {
	t.Helper()
	hops, err := l.RouterNextHops(vip)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hops {
		for _, b := range l.Balancers {
			if b.IPv4 == h || b.IPv6 == h {
				names = append(names, b.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

func packetsPerBalancer(t *testing.T, l *Lab) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, b := range l.Balancers {
		out[b.Name] = vipPackets(t, l, b.Name, vipTCP)
	}
	return out
}

// cliOK runs the CLI against a balancer's daemon and returns its output.
func cliOK(t *testing.T, l *Lab, balancer string, args ...string) string {
	t.Helper()
	out, err := l.CLI(context.Background(), balancer, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// runIn runs the xlb binary in a host's namespace and returns its output.
func (l *Lab) runIn(h Host, args ...string) (string, error) {
	out, err := h.Netns.Command(l.cfg.Binary, args...).CombinedOutput()
	return string(out), err
}

// blackhole adds (or removes) a blackhole route to a in host's namespace.
func blackhole(t *testing.T, h Host, a netip.Addr, add bool) {
	t.Helper()
	op := "add"
	if !add {
		op = "del"
	}
	if out, err := h.Netns.Command("ip", "route", op, "blackhole", netip.PrefixFrom(a, a.BitLen()).String()).CombinedOutput(); err != nil {
		t.Fatalf("ip route %s blackhole %s in %s: %v: %s", op, a, h.Name, err, out)
	}
}

type bgpJSON struct {
	Drained   bool `json:"drained"`
	Addresses []struct {
		Address          string `json:"address"`
		Announced        bool   `json:"announced"`
		GracefulShutdown bool   `json:"graceful_shutdown"`
		Reason           string `json:"reason"`
	} `json:"addresses"`
}

func bgpStatus(t *testing.T, l *Lab, balancer string) bgpJSON {
	t.Helper()
	var st struct {
		BGP *bgpJSON `json:"bgp"`
	}
	out := cliOK(t, l, balancer, "status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.BGP == nil {
		t.Fatalf("parse status (bgp): %v\n%s", err, out)
	}
	return *st.BGP
}

// addrState is "yes", "gshut" or "no" for an address in a BGP status.
func addrState(st bgpJSON, a netip.Addr) string {
	for _, x := range st.Addresses {
		if x.Address == a.String() && x.Announced {
			if x.GracefulShutdown {
				return "gshut"
			}
			return "yes"
		}
	}
	return "no"
}

// load opens new connections to the VIP from the client, 100 a second
// whatever becomes of the earlier ones (open loop), each with a 5 s connect
// timeout, until stopped.
type load struct {
	stopc               chan struct{}
	wg                  sync.WaitGroup
	total, failed, slow atomic.Int64
	mu                  sync.Mutex
	firstErr            error
	slowest             time.Duration
}

type loadResult struct {
	total, failed, slow int64 // slow: took over 0.9s (a SYN retransmitted)
	slowest             time.Duration
	firstErr            error
}

func startLoad(t *testing.T, l *Lab) *load {
	t.Helper()
	ld := &load{stopc: make(chan struct{})}
	c := Client{Netns: l.Client.Netns, Timeout: 5 * time.Second}
	ld.wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ld.stopc:
				return
			case <-tick.C:
			}
			ld.wg.Go(func() {
				start := time.Now()
				_, err := c.Hello(echoVIP)
				took := time.Since(start)
				ld.total.Add(1)
				ld.mu.Lock()
				defer ld.mu.Unlock()
				ld.slowest = max(ld.slowest, took)
				if took > 900*time.Millisecond {
					ld.slow.Add(1)
				}
				if err != nil {
					ld.failed.Add(1)
					if ld.firstErr == nil {
						ld.firstErr = err
					}
				}
			})
		}
	})
	t.Cleanup(func() { ld.stop() })
	return ld
}

// atLeast waits until the load has made n connections since it started.
func (ld *load) atLeast(t *testing.T, n int64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%d connections made", n), func() bool { return ld.total.Load() >= n })
}

func (ld *load) stop() loadResult {
	select {
	case <-ld.stopc:
	default:
		close(ld.stopc)
	}
	ld.wg.Wait()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return loadResult{total: ld.total.Load(), failed: ld.failed.Load(), slow: ld.slow.Load(), slowest: ld.slowest, firstErr: ld.firstErr}
}

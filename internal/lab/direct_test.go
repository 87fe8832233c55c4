package lab

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"

	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// These tests drive the datapath through the loader directly, without the
// daemon: real XDP on the balancer's veth, real TCP and UDP from the client
// to the echo servers. They isolate the datapath; the daemon-driven tests
// in e2e_test.go cover the whole system as a user runs it.

const directTableSize = 4093

// direct is xdp_lb loaded and attached in a lab balancer by the test.
type direct struct {
	dp  *loader.Datapath
	lab *Lab
}

func loadDirect(t *testing.T, l *Lab, balancer string) *direct {
	t.Helper()
	lb, _ := l.Host(balancer)
	dp, err := loader.Load(loader.Options{FlowTableSize: 1 << 16})
	if err != nil {
		t.Fatalf("load datapath: %v", err)
	}
	t.Cleanup(func() {
		_ = dp.Detach()
		_ = dp.Close()
	})
	if err := lb.Netns.Do(func() error { return dp.Attach(Ifname, false) }); err != nil {
		t.Fatalf("attach in %s: %v", balancer, err)
	}
	err = dp.SetConfig(loader.Config{
		SourceMAC: lb.MAC, OuterSource4: OuterSource4, OuterSource6: OuterSource6, MTU: backendMTU,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &direct{dp: dp, lab: l}
}

// backendID gives each backend address its own ID: be1 is 1 (IPv4) and
// 101 (IPv6).
func (d *direct) backendID(i int, v6 bool) uint32 {
	if v6 {
		return uint32(101 + i)
	}
	return uint32(1 + i)
}

// serve installs a VIP over the lab's backends with the given weights
// (default 1; 0 leaves a backend out of the table) in the given mode.
func (d *direct) serve(t *testing.T, key loader.VIPKey, vipID uint32, mode loader.Mode, weights map[string]uint32) {
	t.Helper()
	v6 := key.Addr.Is6()
	var set []maglev.Backend
	for i, be := range d.lab.Backends {
		addr := be.IPv4
		if v6 {
			addr = be.IPv6
		}
		if err := d.dp.PutBackend(d.backendID(i, v6), loader.Backend{Addr: addr, MAC: be.MAC, UsableNew: true, UsableEstablished: true}); err != nil {
			t.Fatal(err)
		}
		w, ok := weights[be.Name]
		if !ok {
			w = 1
		}
		set = append(set, maglev.Backend{Key: addr.String(), Weight: w})
	}
	pos, err := maglev.Build(set, directTableSize)
	if err != nil {
		t.Fatal(err)
	}
	table := make([]uint32, len(pos))
	for s, p := range pos {
		table[s] = d.backendID(int(p), v6)
	}
	if err := d.dp.PutVIP(key, loader.VIP{ID: vipID, Mode: mode, TableSize: directTableSize}); err != nil {
		t.Fatal(err)
	}
	if err := d.dp.SetTable(vipID, table); err != nil {
		t.Fatal(err)
	}
}

// spread opens n new TCP connections to vip from the client, a few at a
// time, and counts the backends that answered.
func spread(t *testing.T, l *Lab, vip netip.AddrPort, n int) map[string]int {
	t.Helper()
	c := Client{Netns: l.Client.Netns}
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		failed []error
		wg     sync.WaitGroup
		next   = make(chan struct{})
	)
	for range 8 {
		wg.Go(func() {
			for range next {
				name, err := c.Hello(vip)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					counts[name]++
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d connections to %s failed; first: %v", len(failed), n, vip, failed[0])
	}
	return counts
}

// checkShares fails unless each backend's share of counts is within tol
// percentage points of want.
func checkShares(t *testing.T, counts map[string]int, want map[string]float64, tol float64) {
	t.Helper()
	total := 0
	for _, n := range counts {
		total += n
	}
	for name, w := range want {
		got := 100 * float64(counts[name]) / float64(total)
		if math.Abs(got-100*w) > tol {
			t.Errorf("%s got %.1f%% of %d connections, want %.1f%% ± %.0f pp (all: %v)", name, got, total, 100*w, tol, counts)
		}
	}
	for name := range counts {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected backend %s answered (%v)", name, counts)
		}
	}
}

// TestDirectDistribution: 3,000 new connections over three backends, equal
// and weighted 1:2:3, through xdp_lb with IPIP to the backends' xdp_decap.
func TestDirectDistribution(t *testing.T) {
	l := newLab(t, Config{Backends: 3})
	d := loadDirect(t, l, "lb1")
	vip := loader.VIPKey{Addr: VIP4, Port: EchoPort, Proto: 6}
	tests := []struct {
		name    string
		weights map[string]uint32
		want    map[string]float64
	}{
		{name: "equal", want: map[string]float64{"be1": 1.0 / 3, "be2": 1.0 / 3, "be3": 1.0 / 3}},
		{name: "1:2:3", weights: map[string]uint32{"be1": 1, "be2": 2, "be3": 3}, want: map[string]float64{"be1": 1.0 / 6, "be2": 2.0 / 6, "be3": 3.0 / 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d.serve(t, vip, 1, loader.ModeIPIP, tt.weights)
			counts := spread(t, l, netip.AddrPortFrom(VIP4, EchoPort), 3000)
			t.Logf("connections per backend: %v", counts)
			checkShares(t, counts, tt.want, 5)
		})
	}
}

// TestDirectModes: IPv4 and IPv6 VIPs, TCP and UDP, IPIP and L2 DSR, each
// reaching every backend.
func TestDirectModes(t *testing.T) {
	l := newLab(t, Config{Backends: 2})
	d := loadDirect(t, l, "lb1")
	c := Client{Netns: l.Client.Netns}
	id := uint32(0)
	for _, mode := range []loader.Mode{loader.ModeIPIP, loader.ModeL2DSR} {
		for _, vip := range []netip.Addr{VIP4, VIP6} {
			for _, proto := range []uint8{6, 17} {
				id++
				name := fmt.Sprintf("mode%d/%s/proto%d", mode, vip, proto)
				t.Run(name, func(t *testing.T) {
					d.serve(t, loader.VIPKey{Addr: vip, Port: EchoPort, Proto: proto}, id, mode, nil)
					ap := netip.AddrPortFrom(vip, EchoPort)
					seen := map[string]int{}
					for i := range 40 {
						var name string
						var err error
						if proto == 6 {
							name, err = c.Hello(ap)
						} else {
							name, err = c.UDP(ap, fmt.Sprintf("hello %d", i))
						}
						if err != nil {
							t.Fatalf("request %d: %v", i, err)
						}
						seen[name]++
					}
					if len(seen) != len(l.Backends) {
						t.Errorf("40 flows reached %v, want all %d backends", seen, len(l.Backends))
					}
				})
			}
		}
	}
}

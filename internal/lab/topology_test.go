package lab

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name                string
		balancers, backends int
		wantErr             string
		wantLast            string // last backend's IPv4
	}{
		{name: "default", balancers: 1, backends: 3, wantLast: "198.51.100.13"},
		{name: "largest", balancers: MaxBalancers, backends: MaxBackends, wantLast: "198.51.100.99"},
		{name: "no backends", balancers: 1, backends: 0, wantErr: "backends 0: allowed are 1 to 89"},
		{name: "too many backends", balancers: 1, backends: 90, wantErr: "backends 90"},
		{name: "no balancer", balancers: 0, backends: 1, wantErr: "balancers 0: allowed are 1 to 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, err := plan("xlb-", tt.balancers, tt.backends, false)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("plan error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			last := topo.Backends[len(topo.Backends)-1]
			if last.IPv4.String() != tt.wantLast {
				t.Errorf("last backend %s, want %s", last.IPv4, tt.wantLast)
			}
			// Host names become switch port names: at most 15 bytes, and
			// every address unique.
			seen := map[netip.Addr]bool{}
			for _, h := range topo.Hosts() {
				if len(h.Name) > 15 {
					t.Errorf("host name %q longer than an interface name may be", h.Name)
				}
				for _, a := range []netip.Addr{h.IPv4, h.IPv6} {
					if seen[a] {
						t.Errorf("address %s used twice", a)
					}
					seen[a] = true
				}
			}
		})
	}
}

// TestLabUpDown builds a lab and checks what DSR depends on: every backend
// prepared by "xlb backend-host setup" and answering on its own addresses
// over TCP, UDP and HTTP in both families; the links' MTUs; and that Down
// leaves nothing behind, even processes whose pid file was lost.
func TestLabUpDown(t *testing.T) {
	l := newLab(t, Config{Backends: 2})
	ctx := context.Background()
	c := Client{Netns: l.Client.Netns}
	for _, be := range l.Backends {
		for _, a := range []netip.Addr{be.IPv4, be.IPv6} {
			if got, err := c.Hello(netip.AddrPortFrom(a, EchoPort)); err != nil || got != be.Name {
				t.Errorf("tcp hello %s = %q, %v; want %s", a, got, err, be.Name)
			}
			if got, err := c.UDP(netip.AddrPortFrom(a, EchoPort), "x"); err != nil || got != be.Name {
				t.Errorf("udp %s = %q, %v; want %s", a, got, err, be.Name)
			}
			if got, err := c.HTTPGet(ctx, netip.AddrPortFrom(a, HTTPPort)); err != nil || got != be.Name {
				t.Errorf("http %s = %q, %v; want %s", a, got, err, be.Name)
			}
		}
		// Backend-host setup: VIPs on lo, DSR sysctls, decap attached.
		h, err := be.Netns.Handle()
		if err != nil {
			t.Fatal(err)
		}
		lo, _ := h.LinkByName("lo")
		addrs, _ := h.AddrList(lo, netlink.FAMILY_ALL)
		eth, _ := h.LinkByName(Ifname)
		h.Close()
		var got []netip.Addr
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			got = append(got, ip.Unmap())
		}
		if !slices.Contains(got, VIP4) || !slices.Contains(got, VIP6) {
			t.Errorf("%s: lo has %v, want both VIPs", be.Name, got)
		}
		if v, _ := be.Netns.ReadSysctl("net.ipv4.conf.all.arp_ignore"); v != "1" {
			t.Errorf("%s: arp_ignore = %s, want 1", be.Name, v)
		}
		if x := eth.Attrs().Xdp; x == nil || !x.Attached {
			t.Errorf("%s: no XDP program (decap) on %s", be.Name, Ifname)
		}
		if eth.Attrs().MTU != backendMTU {
			t.Errorf("%s: MTU %d, want %d", be.Name, eth.Attrs().MTU, backendMTU)
		}
	}

	// Down after a "crash": a process the pid files do not know about.
	stray := l.Backends[0].Netns.Command("sleep", "300")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = stray.Wait() }()
	prefix, dir := l.cfg.Prefix, l.cfg.StateDir
	if err := os.Remove(filepath.Join(dir, serverName("be2")+".pid")); err != nil {
		t.Fatal(err)
	}
	if err := Down(prefix, dir); err != nil {
		t.Fatalf("down: %v", err)
	}
	entries, _ := os.ReadDir(hostnet.NetnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left after down", e.Name())
		}
	}
	if processAlive(stray.Process.Pid) {
		t.Errorf("process %d in a lab namespace survived down", stray.Process.Pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left after down: %v", dir, err)
	}
}

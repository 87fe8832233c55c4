package hostnet_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

func TestResolve(t *testing.T) {
	a := testutil.Netns(t)
	b := testutil.Netns(t)
	testutil.Veth(t,
		hostnet.VethEnd{Netns: a, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}},
		hostnet.VethEnd{Netns: b, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}})
	var peerMAC net.HardwareAddr
	if err := b.Do(func() error {
		l, err := netlink.LinkByName("vb")
		if err == nil {
			peerMAC = l.Attrs().HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Do(func() error {
		_, n, _ := net.ParseCIDR("203.0.113.0/24")
		l, err := netlink.LinkByName("va")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: n, Gw: net.ParseIP("198.51.100.2")})
	}); err != nil {
		t.Fatal(err)
	}

	changed := make(chan struct{}, 100)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	if err := a.Do(func() error {
		return hostnet.WatchNeighbors(done, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		addr    string
		gateway bool
	}{
		{"198.51.100.2", false}, // on-link
		{"203.0.113.7", true},   // via the gateway
	}
	for _, tt := range tests {
		var nh hostnet.NextHop
		var err error
		// The first call may start the resolution; wait for it (bounded).
		for range 100 {
			_ = a.Do(func() error { nh, err = hostnet.Resolve(netip.MustParseAddr(tt.addr)); return nil })
			if !errors.Is(err, hostnet.ErrUnresolved) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("resolve %s: %v", tt.addr, err)
		}
		if nh.Gateway != tt.gateway || nh.Ifname != "va" || nh.MAC.String() != peerMAC.String() {
			t.Fatalf("resolve %s = %+v, want MAC %s gateway %v", tt.addr, nh, peerMAC, tt.gateway)
		}
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no neighbour change seen")
	}
	// No route at all is an error, not ErrUnresolved.
	_ = a.Do(func() error {
		_, err := hostnet.Resolve(netip.MustParseAddr("192.0.2.99"))
		if err == nil || errors.Is(err, hostnet.ErrUnresolved) {
			t.Errorf("resolve without route: %v", err)
		}
		return nil
	})
}

package lab

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// TestRoutedLabRouter: a routed lab's client reaches the backends through
// the router (and they answer through it), and FRR's bgpd runs with a peer
// for every balancer, from the configuration the lab wrote.
func TestRoutedLabRouter(t *testing.T) {
	l := newLab(t, Config{Routed: true, Balancers: 3, Backends: 2})
	if l.Client.IPv4 != farClient4 || l.Router == nil || l.Router.IPv4 != netip.MustParseAddr("198.51.100.1") {
		t.Fatalf("client %s, router %+v: want the client beyond the router", l.Client.IPv4, l.Router)
	}
	c := Client{Netns: l.Client.Netns}
	for _, be := range l.Backends {
		for _, a := range []netip.Addr{be.IPv4, be.IPv6} {
			name, err := c.Hello(netip.AddrPortFrom(a, EchoPort))
			if err != nil || name != be.Name {
				t.Fatalf("hello %s through the router: %q, %v", a, name, err)
			}
		}
	}
	ctx := context.Background()
	if err := l.StartRouter(ctx, RouterConfig{}); err != nil {
		t.Fatal(err)
	}
	out, err := l.Vtysh(ctx, "show bgp ipv4 unicast summary json")
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		AS    uint32                     `json:"as"`
		Peers map[string]json.RawMessage `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	if sum.AS != DefaultRouterAS || len(sum.Peers) != 3 {
		t.Fatalf("router AS %d with %d peers, want %d with 3:\n%s", sum.AS, len(sum.Peers), DefaultRouterAS, out)
	}
	for _, lb := range l.Balancers {
		if _, ok := sum.Peers[lb.IPv4.String()]; !ok {
			t.Fatalf("no peer %s in\n%s", lb.IPv4, out)
		}
	}
	if conf, _ := l.Vtysh(ctx, "show running-config"); !strings.Contains(conf, "set local-preference 0") {
		t.Fatalf("router config lacks the GRACEFUL_SHUTDOWN policy:\n%s", conf)
	}
	if nh, err := l.RouterNextHops(VIP4); err != nil || len(nh) != 0 {
		t.Fatalf("router next hops for %s with no balancer announcing: %v, %v", VIP4, nh, err)
	}
	if err := l.StopRouter(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Vtysh(ctx, "show bgp summary json"); err == nil {
		t.Fatal("vtysh still answers after StopRouter")
	}
}

package lab

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
)

// A routed lab puts a router between the client and the segment of the
// balancers and backends, as in front of a fleet: the client reaches the
// VIPs through the router, which learns them from the balancers over BGP
// (frr.go) and spreads flows over them with ECMP. Backends answer the
// client directly through the router (direct server return).
//
//	client eth0 ── eth1 router eth0 ── switch ── lb1..lbN, be1..beN
//
// Address plan: the router takes .1 on the segment (the client's address
// in a plain lab); the client's link uses the upper half of 192.0.2.0/24
// and 2001:db8:2::/64, so the balancers' outer source prefix shrinks to
// the lower half (RoutedOuterSource4).
var (
	// FarNet4 and FarNet6 are the client's link to the router.
	FarNet4 = netip.MustParsePrefix("192.0.2.128/25")
	FarNet6 = netip.MustParsePrefix("2001:db8:2::/64")
	// RoutedOuterSource4 is the IPv4 encapsulation source prefix in a
	// routed lab, clear of FarNet4.
	RoutedOuterSource4 = netip.MustParsePrefix("192.0.2.0/25")

	farClient4 = netip.MustParseAddr("192.0.2.129")
	farRouter4 = netip.MustParseAddr("192.0.2.254")
	farClient6 = netip.MustParseAddr("2001:db8:2::129")
	farRouter6 = netip.MustParseAddr("2001:db8:2::254")
)

// routerFarIfname is the router's interface to the client.
const routerFarIfname = "eth1"

// planRouter adds the router to a planned topology and moves the client to
// the far link.
func (t *Topology) planRouter(router Host) {
	t.Router = &router
	t.Client.IPv4 = farClient4
	t.Client.IPv6 = farClient6
}

// outerSource4 is the IPv4 encapsulation source prefix the lab's daemons use.
func (t *Topology) outerSource4() netip.Prefix {
	if t.Router != nil {
		return RoutedOuterSource4
	}
	return OuterSource4
}

// buildRouted makes the router forward with 5-tuple ECMP, links the client
// to it and gives client and backends their routes through it. The router
// itself is already on the segment (addHost).
func (t *Topology) buildRouted() error {
	r := t.Router.Netns
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		// Linux hashes multipath routes on addresses only unless told to
		// use the 5-tuple, as real routers do: one client would then
		// always reach the same balancer.
		{"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv6.fib_multipath_hash_policy", "1"},
		// Replies from the backends come from the VIP, which the router
		// routes towards the balancers on the same interface; no strict
		// reverse-path check in the way.
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := r.WriteSysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	}
	c, err := hostnet.CreateNetns(t.Client.Netns.Name)
	if err != nil {
		return err
	}
	for _, k := range []string{"net.ipv6.conf.default.accept_dad", "net.ipv6.conf.all.accept_dad"} {
		if err := c.WriteSysctl(k, "0"); err != nil {
			return err
		}
	}
	err = hostnet.CreateVeth(
		hostnet.VethEnd{Netns: c, Name: Ifname, MTU: clientMTU, NoTxCs: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(farClient4, FarNet4.Bits()), netip.PrefixFrom(farClient6, FarNet6.Bits())}},
		hostnet.VethEnd{Netns: r, Name: routerFarIfname, MTU: clientMTU, NoTxCs: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(farRouter4, FarNet4.Bits()), netip.PrefixFrom(farRouter6, FarNet6.Bits())}},
	)
	if err != nil {
		return fmt.Errorf("link client to router: %w", err)
	}
	if err := t.readClientMAC(); err != nil {
		return err
	}
	def4, def6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	if err := addStaticRoutes(t.Client.Netns, Ifname, []staticRoute{{def4, farRouter4}, {def6, farRouter6}}); err != nil {
		return err
	}
	// Backends answer the client through the router; balancers too (their
	// metrics listener serves fleet reports to the client side).
	for _, h := range append(slices.Clone(t.Backends), t.Balancers...) {
		if err := addStaticRoutes(h.Netns, Ifname, []staticRoute{{FarNet4, t.Router.IPv4}, {FarNet6, t.Router.IPv6}}); err != nil {
			return err
		}
	}
	return nil
}

func (t *Topology) readClientMAC() error {
	h, err := t.Client.Netns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(Ifname)
	if err != nil {
		return fmt.Errorf("find client %s: %w", Ifname, err)
	}
	t.Client.MAC = l.Attrs().HardwareAddr
	return nil
}

type staticRoute struct {
	dst netip.Prefix
	via netip.Addr
}

// addStaticRoutes adds static routes in a namespace, out of ifname.
func addStaticRoutes(ns hostnet.Netns, ifname string, routes []staticRoute) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, ns.Name, err)
	}
	for _, r := range routes {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: hostnet.PrefixToIPNet(r.dst), Gw: r.via.AsSlice()}
		if err := h.RouteReplace(nr); err != nil {
			return fmt.Errorf("route %s via %s in %s: %w", r.dst, r.via, ns.Name, err)
		}
	}
	return nil
}

// RouterNextHops returns the next hops of the router's kernel route to
// addr's host route (/32 or /128), as zebra installed it: one per
// balancer the route is spread over; none when there is no such route.
func (t *Topology) RouterNextHops(addr netip.Addr) ([]netip.Addr, error) {
	if t.Router == nil {
		return nil, fmt.Errorf("router next hops: the lab is not routed")
	}
	h, err := t.Router.Netns.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	dst := hostnet.PrefixToIPNet(netip.PrefixFrom(addr, addr.BitLen()))
	rs, err := h.RouteListFiltered(family, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("list router routes to %s: %w", addr, err)
	}
	var out []netip.Addr
	for _, r := range rs {
		if r.Dst == nil || r.Dst.String() != dst.String() {
			continue
		}
		if r.Gw != nil {
			a, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, a.Unmap())
		}
		for _, nh := range r.MultiPath {
			if nh.Gw != nil {
				a, _ := netip.AddrFromSlice(nh.Gw)
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}

package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrUnresolved: the next hop has no usable neighbour entry (yet). Resolve
// has asked the kernel to resolve it; a neighbour change follows.
var ErrUnresolved = errors.New("next hop not resolved")

// NextHop is how the host reaches an address.
type NextHop struct {
	Addr    netip.Addr // the backend itself when on-link, else the gateway
	Gateway bool       // Addr is a gateway
	Ifindex int
	Ifname  string
	MAC     net.HardwareAddr // nil when not resolved
}

// Resolve finds the next hop towards addr with the routing table (in the
// caller's network namespace) and its MAC in the neighbour table. When
// onLink is set the address must be directly connected (L2 DSR). When the
// neighbour is not resolved it creates a kernel-managed neighbour entry (the
// kernel resolves it and keeps it resolved) and returns ErrUnresolved.
func Resolve(addr netip.Addr) (NextHop, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil {
		return NextHop{}, fmt.Errorf("route to %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return NextHop{}, fmt.Errorf("route to %s: none", addr)
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		return NextHop{}, fmt.Errorf("route to %s: it is a local address", addr)
	}
	nh := NextHop{Addr: addr, Ifindex: r.LinkIndex}
	if r.Gw != nil {
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			return NextHop{}, fmt.Errorf("route to %s: bad gateway %v", addr, r.Gw)
		}
		nh.Addr, nh.Gateway = gw.Unmap(), true
	}
	link, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return nh, fmt.Errorf("route to %s: link %d: %w", addr, r.LinkIndex, err)
	}
	nh.Ifname = link.Attrs().Name
	family := netlink.FAMILY_V4
	if nh.Addr.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(r.LinkIndex, family)
	if err != nil {
		return nh, fmt.Errorf("neighbours of %s: %w", nh.Ifname, err)
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != nh.Addr {
			continue
		}
		if n.State&usable != 0 && len(n.HardwareAddr) == 6 {
			nh.MAC = n.HardwareAddr
			return nh, nil
		}
	}
	if err := manageNeighbor(r.LinkIndex, family, nh.Addr); err != nil {
		return nh, fmt.Errorf("%w: %s on %s: %w", ErrUnresolved, nh.Addr, nh.Ifname, err)
	}
	return nh, fmt.Errorf("%w: %s on %s (resolving)", ErrUnresolved, nh.Addr, nh.Ifname)
}

// manageNeighbor asks the kernel to resolve an address and keep it resolved
// (a "managed" neighbour entry, Linux 5.16+); NTF_USE triggers a resolution
// on older kernels.
func manageNeighbor(ifindex, family int, a netip.Addr) error {
	n := &netlink.Neigh{LinkIndex: ifindex, Family: family, IP: a.AsSlice(), State: netlink.NUD_NONE, FlagsExt: netlink.NTF_EXT_MANAGED}
	if err := netlink.NeighSet(n); err == nil {
		return nil
	}
	n.FlagsExt, n.Flags = 0, netlink.NTF_USE
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("ask the kernel to resolve: %w", err)
	}
	return nil
}

// WatchNeighbors calls fn after every neighbour change in the caller's
// network namespace until done is closed.
func WatchNeighbors(done <-chan struct{}, fn func()) error {
	ch := make(chan netlink.NeighUpdate, 64)
	if err := netlink.NeighSubscribe(ch, done); err != nil {
		return fmt.Errorf("subscribe to neighbour changes: %w", err)
	}
	go func() {
		for range ch {
			fn()
		}
	}()
	return nil
}

// InterfaceAddrs returns the addresses of an interface (IPv6 link-local
// addresses left out).
func InterfaceAddrs(ifname string) (net.HardwareAddr, []netip.Prefix, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("find interface %s: %w", ifname, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return l.Attrs().HardwareAddr, out, nil
}

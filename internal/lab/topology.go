package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/loader"
)

// Address plan (DESIGN.md, Lab): documentation ranges, used only inside the
// lab's own namespaces.
var (
	// VIP4 and VIP6 are the lab's virtual IPs.
	VIP4 = netip.MustParseAddr("203.0.113.10")
	VIP6 = netip.MustParseAddr("2001:db8:f::10")
	// VIPNet4 and VIPNet6 are routed by the client via the balancer.
	VIPNet4 = netip.MustParsePrefix("203.0.113.0/24")
	VIPNet6 = netip.MustParsePrefix("2001:db8:f::/64")
	// OuterSource4 and OuterSource6 are the encapsulation source prefixes.
	OuterSource4 = netip.MustParsePrefix("192.0.2.0/24")
	OuterSource6 = netip.MustParsePrefix("2001:db8:e::/64")
)

const (
	hostNet4Bits = 24
	hostNet6Bits = 64
	// Ifname is the name of every host's interface to the segment.
	Ifname = "eth0"
	// bridgeName is the bridge in the switch namespace.
	bridgeName = "br0"
	// backendMTU leaves room for the 20 (IPv4) or 40 (IPv6) bytes of
	// encapsulation on the links that carry it; the client keeps 1500, so
	// its packets fit after encapsulation.
	backendMTU = 1600
	clientMTU  = 1500
	// MaxBackends is limited by the address plan (.11 to .99).
	MaxBackends = 89
	// MaxBalancers is limited by the address plan (.2 to .9).
	MaxBalancers = 8
)

// Role says what a host does in the lab.
type Role string

// Roles of lab hosts.
const (
	RoleClient   Role = "client"
	RoleRouter   Role = "router"
	RoleBalancer Role = "balancer"
	RoleBackend  Role = "backend"
)

// Host is one network namespace of the lab with one interface, Ifname, on
// the shared segment.
type Host struct {
	Name  string // short name: client, lb1, be1, ...
	Role  Role
	Netns hostnet.Netns
	IPv4  netip.Addr
	IPv6  netip.Addr
	MAC   net.HardwareAddr
}

// Topology describes the lab's hosts and the switch that joins them.
type Topology struct {
	// Prefix starts every namespace name: the lab's own ("xlb-") differs
	// from the tests' ("xlbt-PID-N-"), so they never collide.
	Prefix string
	Switch hostnet.Netns
	Client Host
	// Router is nil unless the lab is routed (router.go): then the client
	// sits beyond it on its own link.
	Router    *Host
	Balancers []Host
	Backends  []Host
}

// Hosts returns every host: client, router (if any), balancers, backends.
func (t *Topology) Hosts() []Host {
	hs := []Host{t.Client}
	if t.Router != nil {
		hs = append(hs, *t.Router)
	}
	hs = append(hs, t.Balancers...)
	return append(hs, t.Backends...)
}

// Host returns the host with the given short name.
func (t *Topology) Host(name string) (Host, bool) {
	for _, h := range t.Hosts() {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// plan returns the hosts of a lab without creating anything; routed puts
// a router between the client and the rest.
func plan(prefix string, balancers, backends int, routed bool) (*Topology, error) {
	if balancers < 1 || balancers > MaxBalancers {
		return nil, fmt.Errorf("balancers %d: allowed are 1 to %d", balancers, MaxBalancers)
	}
	if backends < 1 || backends > MaxBackends {
		return nil, fmt.Errorf("backends %d: allowed are 1 to %d", backends, MaxBackends)
	}
	if prefix == "" || strings.ContainsAny(prefix, "/ ") {
		return nil, fmt.Errorf("prefix %q: allowed is a non-empty name without '/' or spaces", prefix)
	}
	t := &Topology{Prefix: prefix, Switch: hostnet.Netns{Name: prefix + "sw"}}
	host := func(name string, role Role, octet int) Host {
		return Host{
			Name:  name,
			Role:  role,
			Netns: hostnet.Netns{Name: prefix + name},
			IPv4:  netip.AddrFrom4([4]byte{198, 51, 100, byte(octet)}),
			// ::11 for .11, so addresses read alike in both families.
			IPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", octet)),
		}
	}
	t.Client = host("client", RoleClient, 1)
	for i := 1; i <= balancers; i++ {
		t.Balancers = append(t.Balancers, host(fmt.Sprintf("lb%d", i), RoleBalancer, 1+i))
	}
	for i := 1; i <= backends; i++ {
		t.Backends = append(t.Backends, host(fmt.Sprintf("be%d", i), RoleBackend, 10+i))
	}
	if routed {
		t.planRouter(host("router", RoleRouter, 1))
	}
	return t, nil
}

// BuildTopology creates the namespaces, the switch and the links of a lab:
// every host has Ifname joined to a bridge in the switch namespace, so that
// XDP_TX on the balancer reaches the backends and backends answer the client
// directly. On failure everything created is removed again.
func BuildTopology(prefix string, balancers, backends int, routed bool) (*Topology, error) {
	t, err := plan(prefix, balancers, backends, routed)
	if err != nil {
		return nil, err
	}
	for _, n := range append([]hostnet.Netns{t.Switch}, netnsOf(t.Hosts())...) {
		if n.Exists() {
			return nil, fmt.Errorf("build lab: namespace %s exists already (run 'xlb lab down' or 'make clean')", n.Name)
		}
	}
	if err := t.build(); err != nil {
		_ = t.Destroy()
		return nil, err
	}
	return t, nil
}

func netnsOf(hs []Host) []hostnet.Netns {
	out := make([]hostnet.Netns, len(hs))
	for i, h := range hs {
		out[i] = h.Netns
	}
	return out
}

func (t *Topology) build() error {
	sw, err := hostnet.CreateNetns(t.Switch.Name)
	if err != nil {
		return err
	}
	// The switch carries frames only: no IPv6 on its ports (no router
	// solicitations or MLD noise in captures).
	if err := sw.WriteSysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
		return err
	}
	// A plain wire: the kernel's bridge netfilter hooks (built in here)
	// would validate IP headers and drop the malformed frames the tests
	// send at the balancer.
	for _, k := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		if err := sw.WriteSysctl("net/bridge/"+k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := t.createBridge(); err != nil {
		return err
	}
	for i := range t.Hosts() {
		h := t.hostAt(i)
		if h.Role == RoleClient && t.Router != nil {
			continue // on its own link to the router: buildRouted
		}
		if err := t.addHost(h); err != nil {
			return fmt.Errorf("build lab host %s: %w", h.Name, err)
		}
	}
	if t.Router != nil {
		return t.buildRouted()
	}
	return t.addRoutes(t.Balancers[0])
}

// hostAt returns a pointer to the i-th host in Hosts order.
func (t *Topology) hostAt(i int) *Host {
	if i == 0 {
		return &t.Client
	}
	i--
	if t.Router != nil {
		if i == 0 {
			return t.Router
		}
		i--
	}
	if i < len(t.Balancers) {
		return &t.Balancers[i]
	}
	return &t.Backends[i-len(t.Balancers)]
}

func (t *Topology) createBridge() error {
	h, err := t.Switch.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	snooping := false
	br := &netlink.Bridge{
		LinkAttrs: netlink.LinkAttrs{Name: bridgeName, MTU: backendMTU},
		// Without a querier, snooping could stop flooding the
		// neighbour solicitations IPv6 needs.
		MulticastSnooping: &snooping,
	}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge in %s: %w", t.Switch.Name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge up: %w", err)
	}
	return nil
}

// addHost creates the host's namespace and its veth to the switch.
func (t *Topology) addHost(host *Host) error {
	ns, err := hostnet.CreateNetns(host.Netns.Name)
	if err != nil {
		return err
	}
	// Addresses are usable at once: no duplicate address detection.
	for _, k := range []string{"net.ipv6.conf.default.accept_dad", "net.ipv6.conf.all.accept_dad"} {
		if err := ns.WriteSysctl(k, "0"); err != nil {
			return err
		}
	}
	mtu := backendMTU
	if host.Role == RoleClient {
		mtu = clientMTU
	}
	err = hostnet.CreateVeth(
		hostnet.VethEnd{
			Netns: ns, Name: Ifname, MTU: mtu, NoTxCs: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(host.IPv4, hostNet4Bits), netip.PrefixFrom(host.IPv6, hostNet6Bits)},
		},
		// The switch side always takes the larger MTU: the bridge must
		// pass encapsulated frames between balancer and backends.
		hostnet.VethEnd{Netns: t.Switch, Name: host.Name, MTU: backendMTU},
	)
	if err != nil {
		return err
	}
	sh, err := t.Switch.Handle()
	if err != nil {
		return err
	}
	defer sh.Close()
	port, err := sh.LinkByName(host.Name)
	if err != nil {
		return fmt.Errorf("find switch port %s: %w", host.Name, err)
	}
	br, err := sh.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("find bridge: %w", err)
	}
	if err := sh.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("attach %s to bridge: %w", host.Name, err)
	}
	if host.Role == RoleBalancer {
		// XDP_TX from the balancer lands on this peer, which drops it
		// unless GRO (NAPI) is on or an XDP program is attached. With GRO
		// alone the frames wait in the peer's ring until other traffic
		// wakes it (the kernel only kicks a peer that has a program), so
		// attach a pass-through program too.
		if out, err := t.Switch.Command("ethtool", "-K", host.Name, "gro", "on").CombinedOutput(); err != nil {
			return fmt.Errorf("ethtool -K %s gro on: %w: %s", host.Name, err, out)
		}
		if err := t.Switch.Do(func() error { return loader.AttachPass(host.Name) }); err != nil {
			return err
		}
	}
	hh, err := ns.Handle()
	if err != nil {
		return err
	}
	defer hh.Close()
	l, err := hh.LinkByName(Ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", Ifname, err)
	}
	host.MAC = l.Attrs().HardwareAddr
	return nil
}

// addRoutes points the client's routes to the VIP ranges at a balancer.
func (t *Topology) addRoutes(lb Host) error {
	h, err := t.Client.Netns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(Ifname)
	if err != nil {
		return fmt.Errorf("find client %s: %w", Ifname, err)
	}
	for _, r := range []struct {
		dst netip.Prefix
		via netip.Addr
	}{{VIPNet4, lb.IPv4}, {VIPNet6, lb.IPv6}} {
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: hostnet.PrefixToIPNet(r.dst), Gw: r.via.AsSlice()}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("route %s via %s in client: %w", r.dst, r.via, err)
		}
	}
	return nil
}

// RouteVia moves the client's routes to the VIPs to another balancer, as an
// ECMP router would when a balancer goes away. A routed lab's router
// decides that itself.
func (t *Topology) RouteVia(balancer string) error {
	if t.Router != nil {
		return errors.New("route via: the lab's router chooses the balancer")
	}
	for _, b := range t.Balancers {
		if b.Name == balancer {
			return t.addRoutes(b)
		}
	}
	return fmt.Errorf("balancer %q: no such balancer in the lab", balancer)
}

// Destroy kills every process left in the lab's namespaces and deletes the
// namespaces, which removes their links, addresses and XDP attachments.
func (t *Topology) Destroy() error {
	return DestroyPrefix(t.Prefix)
}

// DestroyPrefix removes every namespace whose name starts with prefix and
// the processes inside them, also when the lab that made them crashed.
func DestroyPrefix(prefix string) error {
	entries, err := os.ReadDir(hostnet.NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		ns := hostnet.Netns{Name: e.Name()}
		if err := killNetnsProcs(ns); err != nil {
			errs = append(errs, err)
		}
		if err := ns.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

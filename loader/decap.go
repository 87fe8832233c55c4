package loader

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// DefaultBalancerSources are the outer source prefixes xdp_decap trusts
// when none are given: the encapsulation source prefixes of the lab and the
// operator guide (encap.source_v4 and encap.source_v6).
var DefaultBalancerSources = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("2001:db8:e::/64"),
}

// Limits of the trust maps (bpf/trust.h).
const (
	MaxBalancerSources   = 64
	MaxDecapDestinations = 16
)

// DecapReasons names xdp_decap's counters, in the order of enum
// decap_reason in bpf/trust.h.
var DecapReasons = []string{
	"decapsulated",      // passed to the kernel without its outer header
	"untrusted_source",  // drop: outer source in no balancer prefix
	"wrong_destination", // drop: outer destination not one of Destinations
}

const decapCheckDest = 0x1 // DECAP_F_CHECK_DEST

// DecapOptions configure xdp_decap.
type DecapOptions struct {
	// Generic attaches in generic (skb) mode, for drivers without native
	// XDP. Default native.
	Generic bool
	// BalancerSources are the prefixes an outer source must lie in: the
	// balancers' encapsulation source prefixes. Tunnel packets from
	// anywhere else are dropped (untrusted_source). Default
	// DefaultBalancerSources; at most MaxBalancerSources.
	BalancerSources []netip.Prefix
	// Destinations, when not empty, are the only outer destinations
	// accepted (this host's own addresses); others are dropped
	// (wrong_destination). Default: not checked. At most
	// MaxDecapDestinations.
	Destinations []netip.Addr
}

func (o DecapOptions) withDefaults() DecapOptions {
	if len(o.BalancerSources) == 0 {
		o.BalancerSources = DefaultBalancerSources
	}
	return o
}

// Validate checks o without touching the kernel.
func (o DecapOptions) Validate() error {
	if len(o.BalancerSources) > MaxBalancerSources {
		return fmt.Errorf("%w: %d balancer sources: at most %d", ErrInvalid, len(o.BalancerSources), MaxBalancerSources)
	}
	for _, p := range o.BalancerSources {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("%w: balancer source %q: want an IPv4 or IPv6 prefix such as 192.0.2.0/24", ErrInvalid, p)
		}
	}
	if len(o.Destinations) > MaxDecapDestinations {
		return fmt.Errorf("%w: %d decap destinations: at most %d", ErrInvalid, len(o.Destinations), MaxDecapDestinations)
	}
	for _, a := range o.Destinations {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("%w: decap destination %q: want a unicast IPv4 or IPv6 address", ErrInvalid, a)
		}
	}
	return nil
}

// loadDecapObjects loads xdp_decap and fills its trust maps from o.
func loadDecapWith(o DecapOptions) (*decapObjects, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	var objs decapObjects
	if err := loadDecapObjects(&objs, nil); err != nil {
		return nil, loadError("xdp_decap", err, true)
	}
	if err := fillTrust(&objs, o); err != nil {
		objs.Close()
		return nil, err
	}
	return &objs, nil
}

func fillTrust(objs *decapObjects, o DecapOptions) error {
	one := uint8(1)
	for _, p := range o.BalancerSources {
		p = p.Masked()
		var err error
		if p.Addr().Is4() {
			err = objs.Balancers4.Put(decapPrefix4{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}, one)
		} else {
			err = objs.Balancers6.Put(decapPrefix6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}, one)
		}
		if err != nil {
			return fmt.Errorf("set balancer source %s: %w", p, err)
		}
	}
	var cfg decapTrustConfig
	for _, a := range o.Destinations {
		if err := objs.DecapDests.Put(trustDestOf(a), one); err != nil {
			return fmt.Errorf("set decap destination %s: %w", a, err)
		}
		cfg.Flags |= decapCheckDest
	}
	if err := objs.DecapSettings.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("set decap config: %w", err)
	}
	return nil
}

func trustDestOf(a netip.Addr) decapTrustDest {
	d := decapTrustDest{Family: familyV6}
	if a.Is4() {
		b := a.As4()
		copy(d.Addr[:], b[:])
		d.Family = familyV4
	} else {
		d.Addr = a.As16()
	}
	return d
}

// LoadDecap loads xdp_decap with the default trust (DefaultBalancerSources,
// destinations not checked) for running packets through it.
func LoadDecap() (*Program, error) { return LoadDecapWith(DecapOptions{}) }

// LoadDecapWith loads xdp_decap configured by o for running packets
// through it.
func LoadDecapWith(o DecapOptions) (*Program, error) {
	objs, err := loadDecapWith(o)
	if err != nil {
		return nil, err
	}
	// The program holds its maps; the map handles are not needed.
	prog := objs.XdpDecap
	objs.decapMaps.Close()
	return &Program{prog: prog}, nil
}

// AttachDecap attaches xdp_decap with the default trust to ifname; see
// AttachDecapWith.
func AttachDecap(ifname string, generic bool) error {
	return AttachDecapWith(ifname, DecapOptions{Generic: generic})
}

// AttachDecapWith loads xdp_decap configured by o and attaches it to ifname
// (in the calling thread's network namespace) with a netlink XDP
// attachment: the kernel keeps the program and its maps while the
// interface exists, with no process and no bpffs pin, so backend-host setup
// outlives the command that made it. A program already there is replaced
// atomically (its counters start again from zero).
func AttachDecapWith(ifname string, o DecapOptions) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach xdp_decap to %s: %w", ifname, err)
	}
	objs, err := loadDecapWith(o)
	if err != nil {
		return err
	}
	defer objs.Close()
	flags := xdpFlagsDrvMode
	if o.Generic {
		flags = xdpFlagsSKBMode
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, objs.XdpDecap.FD(), flags); err != nil {
		return fmt.Errorf("attach xdp_decap to %s: %w", ifname, err)
	}
	return nil
}

// DecapState is what is attached to an interface, read from the kernel.
type DecapState struct {
	// ProgramID is the attached XDP program's ID; 0 when none is.
	ProgramID uint32
	// Ours is true when that program is xdp_decap.
	Ours bool
	// Generic is true when it is attached in generic (skb) mode.
	Generic bool
	// BalancerSources and Destinations are xdp_decap's trust, sorted.
	BalancerSources []netip.Prefix
	Destinations    []netip.Addr
	// Counters are xdp_decap's counters by DecapReasons name.
	Counters map[string]uint64
}

// Trusts reports whether the attached xdp_decap trusts exactly what o
// (with its defaults) asks for.
func (s DecapState) Trusts(o DecapOptions) bool {
	o = o.withDefaults()
	src := slices.Clone(o.BalancerSources)
	for i := range src {
		src[i] = src[i].Masked()
	}
	slices.SortFunc(src, netip.Prefix.Compare)
	dst := slices.Clone(o.Destinations)
	slices.SortFunc(dst, netip.Addr.Compare)
	return s.Ours && slices.Equal(slices.Compact(src), s.BalancerSources) && slices.Equal(slices.Compact(dst), s.Destinations)
}

// ReadDecap reads what is attached to ifname (in the calling thread's
// network namespace): which XDP program, and for xdp_decap its trust and
// counters, from the maps the attached program holds.
func ReadDecap(ifname string) (DecapState, error) {
	var st DecapState
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return st, fmt.Errorf("find %s: %w", ifname, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return st, nil
	}
	st.ProgramID = x.ProgId
	st.Generic = x.AttachMode == xdpAttachedSKB
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return st, fmt.Errorf("open xdp program %d of %s: %w", x.ProgId, ifname, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return st, fmt.Errorf("read xdp program %d of %s: %w", x.ProgId, ifname, err)
	}
	if info.Name != "xdp_decap" {
		return st, nil
	}
	st.Ours = true
	if err := readTrust(prog, &st); err != nil {
		return st, fmt.Errorf("read xdp_decap of %s: %w", ifname, err)
	}
	return st, nil
}

// readTrust fills st from the maps prog holds, found by name.
func readTrust(prog *ebpf.Program, st *DecapState) error {
	info, err := prog.Info()
	if err != nil {
		return err
	}
	ids, _ := info.MapIDs()
	st.Counters = map[string]uint64{}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return fmt.Errorf("open map %d: %w", id, err)
		}
		err = readTrustMap(m, st)
		m.Close()
		if err != nil {
			return err
		}
	}
	slices.SortFunc(st.BalancerSources, netip.Prefix.Compare)
	slices.SortFunc(st.Destinations, netip.Addr.Compare)
	return nil
}

func readTrustMap(m *ebpf.Map, st *DecapState) error {
	info, err := m.Info()
	if err != nil {
		return fmt.Errorf("read map info: %w", err)
	}
	var one uint8
	switch info.Name {
	case "balancers4":
		var k decapPrefix4
		it := m.Iterate()
		for it.Next(&k, &one) {
			st.BalancerSources = append(st.BalancerSources, netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)))
		}
		return it.Err()
	case "balancers6":
		var k decapPrefix6
		it := m.Iterate()
		for it.Next(&k, &one) {
			st.BalancerSources = append(st.BalancerSources, netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)))
		}
		return it.Err()
	case "decap_dests":
		var k decapTrustDest
		it := m.Iterate()
		for it.Next(&k, &one) {
			a := netip.AddrFrom16(k.Addr)
			if k.Family == familyV4 {
				a = netip.AddrFrom4([4]byte(k.Addr[:4]))
			}
			st.Destinations = append(st.Destinations, a)
		}
		return it.Err()
	case "decap_stats":
		for i, name := range DecapReasons {
			var per []uint64
			if err := m.Lookup(uint32(i), &per); err != nil {
				return fmt.Errorf("read decap counter %s: %w", name, err)
			}
			var n uint64
			for _, p := range per {
				n += p
			}
			st.Counters[name] = n
		}
	}
	return nil
}

// DetachDecap removes xdp_decap from ifname. It fails with ErrNotAttached
// when no XDP program is attached and refuses to remove another program.
func DetachDecap(ifname string) error {
	st, err := ReadDecap(ifname)
	if err != nil {
		return err
	}
	if st.ProgramID == 0 {
		return fmt.Errorf("detach xdp_decap from %s: %w", ifname, ErrNotAttached)
	}
	if !st.Ours {
		return fmt.Errorf("detach xdp_decap from %s: %w: another XDP program is attached", ifname, ErrInvalid)
	}
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("detach xdp_decap from %s: %w", ifname, err)
	}
	flags := xdpFlagsDrvMode
	if st.Generic {
		flags = xdpFlagsSKBMode
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, -1, flags); err != nil {
		return fmt.Errorf("detach xdp_decap from %s: %w", ifname, err)
	}
	return nil
}

// DecapAttached reports whether xdp_decap is attached to ifname.
func DecapAttached(ifname string) (bool, error) {
	st, err := ReadDecap(ifname)
	return st.Ours, err
}

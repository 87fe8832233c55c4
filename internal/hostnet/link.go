package hostnet

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// VethEnd describes one end of a veth pair.
type VethEnd struct {
	Netns  Netns          // namespace of this end; zero value means the caller's
	Name   string         // interface name, at most 15 bytes
	Addrs  []netip.Prefix // addresses to assign, e.g. 198.51.100.1/24
	MTU    int            // 0 keeps the kernel default
	NoTxCs bool           // turn TX checksum offload off (see DESIGN.md, Lab)
}

// CreateVeth creates a veth pair with each end in its namespace, assigns the
// addresses and brings both ends up. On failure nothing is left behind.
func CreateVeth(a, b VethEnd) error {
	la := netlink.LinkAttrs{Name: a.Name, MTU: a.MTU}
	if a.Netns.Name != "" {
		ns, err := netns.GetFromName(a.Netns.Name)
		if err != nil {
			return fmt.Errorf("create veth %s: netns %s: %w", a.Name, a.Netns.Name, err)
		}
		defer ns.Close()
		la.Namespace = netlink.NsFd(ns)
	}
	veth := &netlink.Veth{LinkAttrs: la, PeerName: b.Name, PeerMTU: uint32(b.MTU)}
	if b.Netns.Name != "" {
		ns, err := netns.GetFromName(b.Netns.Name)
		if err != nil {
			return fmt.Errorf("create veth %s: netns %s: %w", b.Name, b.Netns.Name, err)
		}
		defer ns.Close()
		veth.PeerNamespace = netlink.NsFd(ns)
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", a.Name, b.Name, err)
	}
	for _, end := range []VethEnd{a, b} {
		if err := configureEnd(end); err != nil {
			_ = DeleteLink(a.Netns, a.Name)
			return err
		}
	}
	return nil
}

func configureEnd(end VethEnd) error {
	h, err := handleFor(end.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(end.Name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", end.Name, err)
	}
	for _, p := range end.Addrs {
		addr := &netlink.Addr{IPNet: PrefixToIPNet(p)}
		if p.Addr().Is6() {
			addr.Flags = 0x80 // IFA_F_NODAD: usable at once, no duplicate detection wait
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, end.Name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", end.Name, err)
	}
	if end.NoTxCs {
		if err := disableTxChecksum(end.Netns, end.Name); err != nil {
			return err
		}
	}
	return nil
}

// DeleteLink removes a link; a link that is already gone is not an error.
func DeleteLink(ns Netns, name string) error {
	h, err := handleFor(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

func handleFor(ns Netns) (*netlink.Handle, error) {
	if ns.Name == "" {
		return netlink.NewHandle()
	}
	return ns.Handle()
}

// disableTxChecksum turns TX checksum offload off with ethtool: veth leaves
// checksums of locally generated packets unfinished, which XDP forwarding
// would carry on the wire as they are.
func disableTxChecksum(ns Netns, ifname string) error {
	cmd := ns.Command("ethtool", "-K", ifname, "tx", "off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ethtool -K %s tx off: %w: %s", ifname, err, out)
	}
	return nil
}

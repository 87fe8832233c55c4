package hostnet

import "fmt"

// VethInfo says whether an interface is a veth and what is known of its
// peer. XDP_TX (and redirected) frames on a veth wait in the peer until
// other traffic wakes it, unless the peer has an XDP program of its own.
type VethInfo struct {
	IsVeth bool
	// PeerIndex is the peer's interface index (in PeerNetns's namespace).
	PeerIndex int
	// PeerElsewhere is true when the peer is in another network namespace,
	// whose state cannot be read from here.
	PeerElsewhere bool
	// PeerName and PeerXDP are the peer's name and whether it has an XDP
	// program, when it is in the same namespace.
	PeerName string
	PeerXDP  bool
}

// NeedsPeerXDP is true when XDP_TX frames may wait in the peer: a veth
// whose peer has no XDP program, or whose peer cannot be checked.
func (v VethInfo) NeedsPeerXDP() bool {
	return v.IsVeth && (v.PeerElsewhere || !v.PeerXDP)
}

// Fix says what to do about a veth whose peer needs an XDP program.
func (v VethInfo) Fix(ifname string) string {
	peer := fmt.Sprintf("the peer of %s (ifindex %d in the peer's network namespace)", ifname, v.PeerIndex)
	if !v.PeerElsewhere {
		peer = fmt.Sprintf("its peer %s", v.PeerName)
	}
	return fmt.Sprintf("%s is a veth: XDP_TX frames wait in %s until other traffic arrives there, unless the peer has an XDP program; "+
		"attach one with `xlb veth-peer --iface PEER` run in the peer's namespace (e.g. nsenter --net=/run/netns/NAME)", ifname, peer)
}

// Veth reports whether ifname in ns is a veth and what its peer has.
func Veth(ns Netns, ifname string) (VethInfo, error) {
	var v VethInfo
	h, err := handleFor(ns)
	if err != nil {
		return v, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return v, fmt.Errorf("find %s: %w", ifname, err)
	}
	if l.Type() != "veth" {
		return v, nil
	}
	v.IsVeth = true
	v.PeerIndex = l.Attrs().ParentIndex
	if l.Attrs().NetNsID >= 0 {
		v.PeerElsewhere = true
		return v, nil
	}
	peer, err := h.LinkByIndex(v.PeerIndex)
	if err != nil {
		return v, fmt.Errorf("find the veth peer of %s (ifindex %d): %w", ifname, v.PeerIndex, err)
	}
	v.PeerName = peer.Attrs().Name
	x := peer.Attrs().Xdp
	v.PeerXDP = x != nil && x.Attached
	return v, nil
}

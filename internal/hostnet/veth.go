package hostnet

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// VethInfo says whether an interface is a veth and what is known of its
// peer. XDP_TX (and redirected) frames on a veth wait in the peer until
// other traffic wakes it, unless the peer has an XDP program of its own.
type VethInfo struct {
	IsVeth bool
	// PeerIndex is the peer's interface index in its namespace.
	PeerIndex int
	// PeerKnown is true when the peer could be read: it is in the same
	// namespace, or in a named one (NetnsDir) whose name is PeerNetns.
	PeerKnown bool
	PeerNetns string
	// PeerName and PeerXDP are the peer's name and whether it has an XDP
	// program, when PeerKnown.
	PeerName string
	PeerXDP  bool
}

// NeedsPeerXDP is true when XDP_TX frames may wait in the peer: a veth
// whose peer has no XDP program, or whose peer cannot be read.
func (v VethInfo) NeedsPeerXDP() bool {
	return v.IsVeth && (!v.PeerKnown || !v.PeerXDP)
}

// Fix says what to do about a veth whose peer needs an XDP program.
func (v VethInfo) Fix(ifname string) string {
	const why = "XDP_TX frames wait there until other traffic arrives, unless it has an XDP program"
	switch {
	case !v.PeerKnown:
		return fmt.Sprintf("%s is a veth whose peer (ifindex %d) is in another network namespace, not checked: %s; "+
			"if it has none, run `xlb veth-peer --iface PEER` in the peer's namespace (e.g. with nsenter --net=...)", ifname, v.PeerIndex, why)
	case v.PeerNetns != "":
		return fmt.Sprintf("%s is a veth whose peer %s (namespace %s) has no XDP program: %s; run `ip netns exec %s xlb veth-peer --iface %s`",
			ifname, v.PeerName, v.PeerNetns, why, v.PeerNetns, v.PeerName)
	}
	return fmt.Sprintf("%s is a veth whose peer %s has no XDP program: %s; run `xlb veth-peer --iface %s`", ifname, v.PeerName, why, v.PeerName)
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
	ph := h
	if id := l.Attrs().NetNsID; id >= 0 {
		peerNS, ok := namedNetnsWithID(h, id)
		if !ok {
			return v, nil
		}
		v.PeerNetns = peerNS.Name
		if ph, err = peerNS.Handle(); err != nil {
			return v, nil
		}
		defer ph.Close()
	}
	peer, err := ph.LinkByIndex(v.PeerIndex)
	if err != nil {
		return v, fmt.Errorf("find the veth peer of %s (ifindex %d): %w", ifname, v.PeerIndex, err)
	}
	v.PeerKnown = true
	v.PeerName = peer.Attrs().Name
	x := peer.Attrs().Xdp
	v.PeerXDP = x != nil && x.Attached
	return v, nil
}

// namedNetnsWithID finds the named namespace (under NetnsDir) that h's
// namespace knows by the namespace ID id.
func namedNetnsWithID(h *netlink.Handle, id int) (Netns, bool) {
	entries, err := os.ReadDir(NetnsDir)
	if err != nil {
		return Netns{}, false
	}
	for _, e := range entries {
		n := Netns{Name: e.Name()}
		f, err := os.Open(n.Path())
		if err != nil {
			continue
		}
		got, err := h.GetNetNsIdByFd(int(f.Fd()))
		f.Close()
		if err == nil && got == id {
			return n, true
		}
	}
	return Netns{}, false
}

package hostnet

import (
	"net"
	"net/netip"
)

// PrefixToIPNet converts a prefix (keeping its host bits) to the form netlink
// takes.
func PrefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

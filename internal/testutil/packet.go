package testutil

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Protocol numbers used by the packet builder.
const (
	ProtoICMP   = 1
	ProtoIPIP   = 4
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoIPv6   = 41
	ProtoICMPv6 = 58
)

// TCP flags for Packet.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
)

// Packet describes an Ethernet frame carrying IPv4 or IPv6 (by the family
// of Src) for tests: Bytes builds it with correct lengths and checksums.
type Packet struct {
	DstMAC, SrcMAC net.HardwareAddr // nil: 02:00:00:00:00:02 / 02:00:00:00:00:01
	VLAN           uint16           // tag control of one 802.1Q tag; 0 = untagged
	Src, Dst       netip.Addr
	Proto          uint8 // ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, or any
	TTL            uint8 // 0 = 64
	TOS            uint8 // IPv4 TOS or IPv6 traffic class
	FlowLabel      uint32
	ID             uint16
	DF             bool
	MoreFragments  bool
	FragOffset     uint16 // in 8-byte units
	IPOptions      []byte // IPv4 options, a multiple of 4 bytes
	IPv6Ext        uint8  // if non-zero, an 8-byte IPv6 extension header of this type precedes L4
	SrcPort        uint16
	DstPort        uint16
	TCPFlags       uint8
	Seq            uint32
	ICMPType       uint8
	ICMPCode       uint8
	ICMPRest       uint32 // the 4 bytes after the ICMP checksum (e.g. the MTU)
	Payload        []byte // L4 payload; for ICMP the quoted packet
}

var (
	defaultSrcMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	defaultDstMAC = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// Bytes builds the frame.
func (p Packet) Bytes() []byte {
	return append(p.EthHeader(), p.L3()...)
}

// EthHeader builds the Ethernet header (with the VLAN tag, if any).
func (p Packet) EthHeader() []byte {
	dst, src := p.DstMAC, p.SrcMAC
	if dst == nil {
		dst = defaultDstMAC
	}
	if src == nil {
		src = defaultSrcMAC
	}
	b := append(append([]byte{}, dst...), src...)
	etype := uint16(0x0800)
	if p.Src.Is6() {
		etype = 0x86dd
	}
	if p.VLAN != 0 {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, p.VLAN)
	}
	return binary.BigEndian.AppendUint16(b, etype)
}

// L3 builds the IP packet.
func (p Packet) L3() []byte {
	l4 := p.L4()
	if p.Src.Is6() {
		next := p.Proto
		var ext []byte
		if p.IPv6Ext != 0 {
			ext = []byte{p.Proto, 0, 0, 0, 0, 0, 0, 0}
			next = p.IPv6Ext
		}
		h := IPv6Header(p.Src, p.Dst, next, p.TOS, p.FlowLabel, p.ttl(), len(ext)+len(l4))
		return append(append(h, ext...), l4...)
	}
	var frag uint16
	if p.DF {
		frag |= 0x4000
	}
	if p.MoreFragments {
		frag |= 0x2000
	}
	frag |= p.FragOffset & 0x1fff
	h := IPv4Header(p.Src, p.Dst, p.Proto, p.TOS, p.ID, frag, p.ttl(), p.IPOptions, len(l4))
	return append(h, l4...)
}

func (p Packet) ttl() uint8 {
	if p.TTL == 0 {
		return 64
	}
	return p.TTL
}

// L4 builds the transport header and payload with its checksum.
func (p Packet) L4() []byte {
	var b []byte
	switch p.Proto {
	case ProtoTCP:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		b = binary.BigEndian.AppendUint32(b, p.Seq)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = append(b, 5<<4, p.TCPFlags)
		b = binary.BigEndian.AppendUint16(b, 65535)
		b = append(b, 0, 0, 0, 0) // checksum, urgent pointer
		b = append(b, p.Payload...)
		binary.BigEndian.PutUint16(b[16:], L4Checksum(p.Src, p.Dst, ProtoTCP, b))
	case ProtoUDP:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		b = binary.BigEndian.AppendUint16(b, uint16(8+len(p.Payload)))
		b = append(b, 0, 0)
		b = append(b, p.Payload...)
		binary.BigEndian.PutUint16(b[6:], L4Checksum(p.Src, p.Dst, ProtoUDP, b))
	case ProtoICMP, ProtoICMPv6:
		b = append(b, p.ICMPType, p.ICMPCode, 0, 0)
		b = binary.BigEndian.AppendUint32(b, p.ICMPRest)
		b = append(b, p.Payload...)
		if p.Proto == ProtoICMP {
			binary.BigEndian.PutUint16(b[2:], Checksum(b))
		} else {
			binary.BigEndian.PutUint16(b[2:], L4Checksum(p.Src, p.Dst, ProtoICMPv6, b))
		}
	default:
		b = append(b, p.Payload...)
	}
	return b
}

// IPv4Header builds an IPv4 header with its checksum for a payload of
// payloadLen bytes.
func IPv4Header(src, dst netip.Addr, proto, tos uint8, id, frag uint16, ttl uint8, options []byte, payloadLen int) []byte {
	hlen := 20 + len(options)
	b := []byte{byte(0x40 | hlen/4), tos}
	b = binary.BigEndian.AppendUint16(b, uint16(hlen+payloadLen))
	b = binary.BigEndian.AppendUint16(b, id)
	b = binary.BigEndian.AppendUint16(b, frag)
	b = append(b, ttl, proto, 0, 0)
	s, d := src.As4(), dst.As4()
	b = append(append(append(b, s[:]...), d[:]...), options...)
	binary.BigEndian.PutUint16(b[10:], Checksum(b))
	return b
}

// IPv6Header builds an IPv6 header for a payload of payloadLen bytes.
func IPv6Header(src, dst netip.Addr, next, tclass uint8, flowLabel uint32, hopLimit uint8, payloadLen int) []byte {
	b := binary.BigEndian.AppendUint32(nil, 6<<28|uint32(tclass)<<20|flowLabel&0xfffff)
	b = binary.BigEndian.AppendUint16(b, uint16(payloadLen))
	b = append(b, next, hopLimit)
	s, d := src.As16(), dst.As16()
	return append(append(b, s[:]...), d[:]...)
}

// Checksum is the Internet checksum (RFC 1071) of b.
func Checksum(b []byte) uint16 {
	return ^fold(sum16(0, b))
}

// L4Checksum is the TCP/UDP/ICMPv6 checksum of segment (its checksum field
// zero) with the pseudo-header of src and dst.
func L4Checksum(src, dst netip.Addr, proto uint8, segment []byte) uint16 {
	var ph []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = append(ph, 0, proto)
		ph = binary.BigEndian.AppendUint16(ph, uint16(len(segment)))
	} else {
		s, d := src.As16(), dst.As16()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = binary.BigEndian.AppendUint32(ph, uint32(len(segment)))
		ph = append(ph, 0, 0, 0, proto)
	}
	c := ^fold(sum16(sum16(0, ph), segment))
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	return c
}

func sum16(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

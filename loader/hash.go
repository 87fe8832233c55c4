package loader

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Flow identifies a flow as the client sends it.
type Flow struct {
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	Proto    uint8
}

// FlowHash is the datapath's flow hash (bpf/hash.h), for tools and tests
// that predict where a flow goes: Bob Jenkins' lookup3 mixing over the
// source address, destination address and ports as 32-bit little-endian
// loads of their network-order bytes, initialised with 0xdeadbeef + seed.
// srcOnly hashes the source address alone. The slot of a flow in a VIP's
// table is FlowHash(...) % table size; the protocol is not hashed.
func FlowHash(f Flow, seed uint32, srcOnly bool) uint32 {
	le := binary.LittleEndian
	src, dst := addr16(f.Src.Unmap()), addr16(f.Dst.Unmap())
	var pb [4]byte
	binary.BigEndian.PutUint16(pb[0:], f.DstPort)
	binary.BigEndian.PutUint16(pb[2:], f.SrcPort)
	// In C: ((u32)sport << 16) | dport of the raw (network-order) loads.
	ports := uint32(le.Uint16(pb[2:]))<<16 | uint32(le.Uint16(pb[0:]))
	a := uint32(0xdeadbeef) + seed
	b, c := a, a
	if f.Src.Unmap().Is4() {
		a += le.Uint32(src[0:])
		if !srcOnly {
			b += le.Uint32(dst[0:])
			c += ports
		}
		_, _, c = hashFinal(a, b, c)
		return c
	}
	a += le.Uint32(src[0:])
	b += le.Uint32(src[4:])
	c += le.Uint32(src[8:])
	a, b, c = hashMix(a, b, c)
	a += le.Uint32(src[12:])
	if srcOnly {
		_, _, c = hashFinal(a, b, c)
		return c
	}
	b += le.Uint32(dst[0:])
	c += le.Uint32(dst[4:])
	a, b, c = hashMix(a, b, c)
	a += le.Uint32(dst[8:])
	b += le.Uint32(dst[12:])
	c += ports
	_, _, c = hashFinal(a, b, c)
	return c
}

func rol(w uint32, s int) uint32 { return bits.RotateLeft32(w, s) }

func hashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= rol(c, 4)
	c += b
	b -= a
	b ^= rol(a, 6)
	a += c
	c -= b
	c ^= rol(b, 8)
	b += a
	a -= c
	a ^= rol(c, 16)
	c += b
	b -= a
	b ^= rol(a, 19)
	a += c
	c -= b
	c ^= rol(b, 4)
	b += a
	return a, b, c
}

func hashFinal(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= rol(b, 14)
	a ^= c
	a -= rol(c, 11)
	b ^= a
	b -= rol(a, 25)
	c ^= b
	c -= rol(b, 16)
	a ^= c
	a -= rol(c, 4)
	b ^= a
	b -= rol(a, 14)
	c ^= b
	c -= rol(b, 24)
	return a, b, c
}

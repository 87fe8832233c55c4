package testutil

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"
)

func TestIPv4HeaderChecksum(t *testing.T) {
	// The example header of Wikipedia's "IPv4 header checksum" article.
	h := IPv4Header(netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("192.168.0.199"), ProtoUDP, 0, 0, 0x4000, 64, nil, 0x73-20)
	if got, want := hex.EncodeToString(h), "450000730000400040110000c0a80001c0a800c7"; got[:20]+"0000"+got[24:] != want {
		t.Fatalf("header %s, want %s with a checksum", got, want)
	}
	if got := binary.BigEndian.Uint16(h[10:]); got != 0xb861 {
		t.Errorf("checksum %#04x, want 0xb861", got)
	}
}

// A packet's checksums verify: summing a header or segment with its
// checksum in place gives 0xffff.
func TestPacketChecksumsVerify(t *testing.T) {
	for name, p := range map[string]Packet{
		"tcp4":  {Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("203.0.113.10"), Proto: ProtoTCP, SrcPort: 1, DstPort: 80, Payload: []byte("odd")},
		"udp6":  {Src: netip.MustParseAddr("2001:db8:1::1"), Dst: netip.MustParseAddr("2001:db8:f::10"), Proto: ProtoUDP, SrcPort: 1, DstPort: 53, Payload: []byte("x")},
		"icmp4": {Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("203.0.113.10"), Proto: ProtoICMP, ICMPType: 8},
		"icmp6": {Src: netip.MustParseAddr("2001:db8:1::1"), Dst: netip.MustParseAddr("2001:db8:f::10"), Proto: ProtoICMPv6, ICMPType: 128},
	} {
		l3 := p.L3()
		hlen := 40
		if p.Src.Is4() {
			hlen = 20
			if got := fold(sum16(0, l3[:20])); got != 0xffff {
				t.Errorf("%s: ip header sums to %#04x", name, got)
			}
		}
		seg := l3[hlen:]
		var ph []byte
		if p.Src.Is4() {
			s, d := p.Src.As4(), p.Dst.As4()
			ph = append(append(ph, s[:]...), d[:]...)
			ph = append(ph, 0, p.Proto, byte(len(seg)>>8), byte(len(seg)))
		} else {
			s, d := p.Src.As16(), p.Dst.As16()
			ph = append(append(ph, s[:]...), d[:]...)
			ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
			ph = append(ph, 0, 0, 0, p.Proto)
		}
		if p.Proto == ProtoICMP {
			ph = nil
		}
		if got := fold(sum16(sum16(0, ph), seg)); got != 0xffff {
			t.Errorf("%s: segment sums to %#04x", name, got)
		}
	}
}

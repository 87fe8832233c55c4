package loader

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

var (
	backend4 = netip.MustParseAddr("198.51.100.11")
	backend6 = netip.MustParseAddr("2001:db8:1::11")
	spoofer4 = netip.MustParseAddr("198.51.100.66") // a host on the segment, no balancer
	spoofer6 = netip.MustParseAddr("2001:db8:1::66")
)

// tunnel wraps inner in an outer IPv4 (protocol 4) or IPv6 (next header
// 41) header from src to dst, as a balancer or a spoofing host would.
func tunnel(inner testutil.Packet, src, dst netip.Addr) []byte {
	eth := testutil.Packet{DstMAC: backendMAC(1), SrcMAC: balancerMAC, VLAN: inner.VLAN, Src: src}.EthHeader()
	l3 := inner.L3()
	var outer []byte
	if src.Is4() {
		outer = testutil.IPv4Header(src, dst, testutil.ProtoIPIP, 0, 0, 0, 64, nil, len(l3))
	} else {
		outer = testutil.IPv6Header(src, dst, testutil.ProtoIPv6, 0, 0, 64, len(l3))
	}
	return append(append(eth, outer...), l3...)
}

// decapsulated is what xdp_decap should pass for tunnel(inner, ...).
func decapsulated(inner testutil.Packet) []byte {
	inner.DstMAC, inner.SrcMAC = backendMAC(1), balancerMAC
	return inner.Bytes()
}

func decapCounters(t testing.TB, p *Program) map[string]uint64 {
	t.Helper()
	var st DecapState
	st.Ours = true
	if err := readTrust(p.prog, &st); err != nil {
		t.Fatal(err)
	}
	return st.Counters
}

func counterDelta(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			out[k] = n
		}
	}
	return out
}

// TestDecapTrust: xdp_decap strips only tunnel packets from a balancer
// prefix (and, when destinations are configured, to one of them); the rest
// is dropped and counted by reason. Every output byte and counter is
// compared.
func TestDecapTrust(t *testing.T) {
	testutil.RequirePrivileged(t)
	strict, err := LoadDecapWith(DecapOptions{
		BalancerSources: []netip.Prefix{outer4, outer6, netip.MustParsePrefix("203.0.113.128/25")},
		Destinations:    []netip.Addr{backend4, backend6},
	})
	must(t, err)
	t.Cleanup(func() { strict.Close() })
	loose, err := LoadDecap() // defaults: the lab's outer prefixes, any destination
	must(t, err)
	t.Cleanup(func() { loose.Close() })

	in4 := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	in6 := tcpTo(vip6, client6, 80, testutil.TCPSyn)
	vlan := in4
	vlan.VLAN = 9
	bal4 := netip.MustParseAddr("192.0.2.77")
	bal6 := netip.MustParseAddr("2001:db8:e::77")
	ok := map[string]uint64{"decapsulated": 1}
	plain := in4.Bytes()

	tests := []struct {
		name   string
		prog   *Program
		in     []byte
		want   Action
		out    []byte // nil: the input, untouched
		counts map[string]uint64
	}{
		{"ipv4 from a balancer", strict, tunnel(in4, bal4, backend4), ActionPass, decapsulated(in4), ok},
		{"ipv6 from a balancer", strict, tunnel(in6, bal6, backend6), ActionPass, decapsulated(in6), ok},
		{"vlan from a balancer", strict, tunnel(vlan, bal4, backend4), ActionPass, decapsulated(vlan), ok},
		{"second prefix", strict, tunnel(in4, netip.MustParseAddr("203.0.113.200"), backend4), ActionPass, decapsulated(in4), ok},
		{"ipv4 from outside the prefixes", strict, tunnel(in4, spoofer4, backend4), ActionDrop, nil, map[string]uint64{"untrusted_source": 1}},
		{"ipv4 just below the second prefix", strict, tunnel(in4, netip.MustParseAddr("203.0.113.127"), backend4), ActionDrop, nil, map[string]uint64{"untrusted_source": 1}},
		{"ipv6 from outside the prefixes", strict, tunnel(in6, spoofer6, backend6), ActionDrop, nil, map[string]uint64{"untrusted_source": 1}},
		{"ipv4 to another address", strict, tunnel(in4, bal4, backend4.Next()), ActionDrop, nil, map[string]uint64{"wrong_destination": 1}},
		{"ipv6 to another address", strict, tunnel(in6, bal6, backend6.Next()), ActionDrop, nil, map[string]uint64{"wrong_destination": 1}},
		{"not a tunnel packet", strict, plain, ActionPass, nil, map[string]uint64{}},
		{"defaults: from a balancer, any destination", loose, tunnel(in4, bal4, backend4.Next()), ActionPass, decapsulated(in4), ok},
		{"defaults: from outside", loose, tunnel(in6, spoofer6, backend6), ActionDrop, nil, map[string]uint64{"untrusted_source": 1}},
		{"defaults: the other prefix is not trusted", loose, tunnel(in4, netip.MustParseAddr("203.0.113.200"), backend4), ActionDrop, nil, map[string]uint64{"untrusted_source": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := decapCounters(t, tc.prog)
			act, out, err := tc.prog.Run(tc.in)
			must(t, err)
			if act != tc.want {
				t.Errorf("verdict %s, want %s", act, tc.want)
			}
			want := tc.out
			if want == nil {
				want = tc.in
			}
			diffBytes(t, out, want)
			if d := counterDelta(before, decapCounters(t, tc.prog)); !maps.Equal(d, tc.counts) {
				t.Errorf("counters changed by %v, want %v", d, tc.counts)
			}
		})
	}
}

// TestDecapOptionsInvalid: bad prefixes and addresses are refused by name.
func TestDecapOptionsInvalid(t *testing.T) {
	many := make([]netip.Prefix, MaxBalancerSources+1)
	for i := range many {
		many[i] = outer4
	}
	for _, o := range []DecapOptions{
		{BalancerSources: []netip.Prefix{{}}},
		{BalancerSources: []netip.Prefix{netip.MustParsePrefix("::ffff:192.0.2.0/120")}},
		{BalancerSources: many},
		{Destinations: []netip.Addr{netip.IPv4Unspecified()}},
		{Destinations: []netip.Addr{netip.MustParseAddr("ff02::1")}},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

// TestReadDecap attaches xdp_decap to a veth in a namespace of its own and
// reads back from the kernel what is attached and what it trusts.
func TestReadDecap(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns, peer := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: peer, Name: "eth0"})
	o := DecapOptions{
		BalancerSources: []netip.Prefix{netip.MustParsePrefix("192.0.2.9/24"), outer6},
		Destinations:    []netip.Addr{backend6, backend4},
	}
	var before, after DecapState
	err := ns.Do(func() error {
		var err error
		if before, err = ReadDecap("eth0"); err != nil {
			return err
		}
		if err := AttachDecapWith("eth0", o); err != nil {
			return err
		}
		after, err = ReadDecap("eth0")
		return err
	})
	must(t, err)
	if before.ProgramID != 0 || before.Ours {
		t.Errorf("before attach: %+v", before)
	}
	if after.ProgramID == 0 || !after.Ours || after.Generic {
		t.Errorf("after attach: %+v", after)
	}
	wantSrc := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), outer6}
	if len(after.BalancerSources) != 2 || after.BalancerSources[0] != wantSrc[0] || after.BalancerSources[1] != wantSrc[1] {
		t.Errorf("balancer sources %v, want %v", after.BalancerSources, wantSrc)
	}
	if len(after.Destinations) != 2 || after.Destinations[0] != backend4 || after.Destinations[1] != backend6 {
		t.Errorf("destinations %v", after.Destinations)
	}
	if len(after.Counters) != len(DecapReasons) {
		t.Errorf("counters %v, want one per reason", after.Counters)
	}
	if !after.Trusts(o) {
		t.Errorf("Trusts(the options it was attached with) = false")
	}
	if after.Trusts(DecapOptions{}) || after.Trusts(DecapOptions{BalancerSources: o.BalancerSources}) {
		t.Errorf("Trusts(other options) = true")
	}
	must(t, ns.Do(func() error { return DetachDecap("eth0") }))
	id, err := hostnet.XDPProgID(ns, "eth0")
	must(t, err)
	if id != 0 {
		t.Errorf("program %d left after DetachDecap", id)
	}
}

// FuzzXDPDecap: random bytes, or random changes to tunnel packets from a
// balancer and from a spoofing host, never give XDP_ABORTED; a dropped
// packet is a tunnel packet whose outer source is outside the balancer
// prefixes; a packet passed is either untouched or a tunnel packet from a
// balancer prefix less its outer header.
func FuzzXDPDecap(f *testing.F) {
	in4 := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	in6 := tcpTo(vip6, client6, 80, testutil.TCPSyn)
	f.Add(tunnel(in4, netip.MustParseAddr("192.0.2.1"), backend4))
	f.Add(tunnel(in6, netip.MustParseAddr("2001:db8:e::1"), backend6))
	f.Add(tunnel(in4, spoofer4, backend4))
	f.Add(tunnel(in6, spoofer6, backend6))
	f.Add(in4.Bytes())
	f.Add(make([]byte, 14))
	testutil.RequirePrivileged(f)
	p, err := LoadDecap()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { p.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 {
			return
		}
		act, out, err := p.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		src, olen, ok := outerSourceOf(in)
		trusted := ok && (DefaultBalancerSources[0].Contains(src) || DefaultBalancerSources[1].Contains(src))
		switch act {
		case ActionAborted:
			t.Fatalf("XDP_ABORTED for %x", in)
		case ActionDrop:
			if !ok || trusted {
				t.Fatalf("dropped a packet that is no tunnel packet from outside the prefixes: %x", in)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("XDP_DROP changed the packet %x", in)
			}
		case ActionPass:
			if bytes.Equal(out, in) {
				return
			}
			if !trusted {
				t.Fatalf("decapsulated a packet that is no tunnel packet from a balancer: %x", in)
			}
			if removed := len(in) - len(out); removed != olen {
				t.Fatalf("removed %d bytes, the outer header has %d", removed, olen)
			}
		default:
			t.Fatalf("verdict %s for %x", act, in)
		}
	})
}

// outerSourceOf reads the outer source of a frame that looks like an IPIP
// or IP6IP6 packet (untagged or with one VLAN tag) the way xdp_decap
// should: IPv4 with IHL 5, not a fragment, protocol 4; IPv6 with next
// header 41.
func outerSourceOf(b []byte) (netip.Addr, int, bool) {
	off := 14
	et := binary.BigEndian.Uint16(b[12:])
	if et == 0x8100 || et == 0x88a8 {
		if len(b) < 18 {
			return netip.Addr{}, 0, false
		}
		off = 18
		et = binary.BigEndian.Uint16(b[16:])
	}
	switch et {
	case 0x0800:
		if len(b) < off+20 || b[off] != 0x45 || b[off+9] != 4 || binary.BigEndian.Uint16(b[off+6:])&0x3fff != 0 {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom4([4]byte(b[off+12 : off+16])), 20, true
	case 0x86dd:
		if len(b) < off+40 || b[off]>>4 != 6 || b[off+6] != 41 {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom16([16]byte(b[off+8 : off+24])), 40, true
	}
	return netip.Addr{}, 0, false
}

package loader

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

func tcpTo(dst, src netip.Addr, dport uint16, flags uint8) testutil.Packet {
	return testutil.Packet{Src: src, Dst: dst, Proto: testutil.ProtoTCP, SrcPort: 40000, DstPort: dport, TCPFlags: flags, DF: true, TOS: 0x10, Payload: []byte("hello")}
}

func udpTo(dst, src netip.Addr, dport uint16) testutil.Packet {
	return testutil.Packet{Src: src, Dst: dst, Proto: testutil.ProtoUDP, SrcPort: 40001, DstPort: dport, Payload: []byte("query")}
}

// ptb4 is an ICMP "fragmentation needed" from a router about the packet a
// backend sent from the VIP to the client (first 28 bytes quoted).
func ptb4(flow testutil.Packet) testutil.Packet {
	reply := testutil.Packet{Src: flow.Dst, Dst: flow.Src, Proto: flow.Proto, SrcPort: flow.DstPort, DstPort: flow.SrcPort, TCPFlags: testutil.TCPAck, DF: true, Payload: make([]byte, 1400)}
	quoted := reply.L3()[:28]
	return testutil.Packet{Src: router4, Dst: flow.Dst, Proto: testutil.ProtoICMP, ICMPType: 3, ICMPCode: 4, ICMPRest: 1400, Payload: quoted}
}

func ptb6(flow testutil.Packet) testutil.Packet {
	reply := testutil.Packet{Src: flow.Dst, Dst: flow.Src, Proto: flow.Proto, SrcPort: flow.DstPort, DstPort: flow.SrcPort, TCPFlags: testutil.TCPAck, Payload: make([]byte, 1400)}
	quoted := reply.L3()[:48]
	return testutil.Packet{Src: router6, Dst: flow.Dst, Proto: testutil.ProtoICMPv6, ICMPType: 2, ICMPRest: 1280, Payload: quoted}
}

func TestXDPLB(t *testing.T) {
	d := newTestDatapath(t)
	v4 := roundRobin(tableSize, 1, 2, 3, 4)
	v6 := roundRobin(tableSize, 11, 12, 13, 14)

	syn4 := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack4 := tcpTo(vip4, client4, 80, testutil.TCPAck)
	ack4.SrcPort = 40100
	syn6 := tcpTo(vip6, client6, 80, testutil.TCPSyn)
	ack6 := tcpTo(vip6, client6, 80, testutil.TCPAck)
	ack6.SrcPort = 40100
	udp4 := udpTo(vip4, client4, 53)
	udp6 := udpTo(vip6, client6, 53)
	dsr4 := udpTo(vip4DSR, client4, 53)
	dsr6 := udpTo(vip6DSR, client6, 53)
	anyPort := tcpTo(vip4Any, client4, 8443, testutil.TCPSyn)
	srcOnly := tcpTo(vip4Src, client4, 80, testutil.TCPSyn)
	srcOnlyOther := srcOnly
	srcOnlyOther.SrcPort = 50000
	vlan := syn4
	vlan.VLAN = 42
	vlan.SrcPort = 40200
	big := udp4
	big.Payload = make([]byte, 1500-20-8-20+1) // one byte over the MTU once encapsulated
	fits := udp4
	fits.SrcPort = 40300
	fits.Payload = make([]byte, 1500-20-8-20)
	dsrFull := dsr4
	dsrFull.Payload = make([]byte, 1500-20-8)

	h := func(p testutil.Packet) uint32 { return FlowHash(flowOf(p), DefaultHashSeed, false) }
	be4 := func(p testutil.Packet) uint32 { return expectedBackend(v4, flowOf(p), false) }
	be6 := func(p testutil.Packet) uint32 { return expectedBackend(v6, flowOf(p), false) }
	fwd := func(be uint32, p testutil.Packet) map[string]uint64 {
		n := uint64(len(p.Bytes()))
		return map[string]uint64{fmt.Sprintf("backend %d packets", be): 1, fmt.Sprintf("backend %d bytes", be): n}
	}
	exit := func(reason string) map[string]uint64 { return map[string]uint64{"exit " + reason: 1} }

	ptbFlow4 := tcpTo(vip4, client4, 80, testutil.TCPAck)
	ptbFlow4.SrcPort = 41000
	ptbFlow6 := tcpTo(vip6, client6, 80, testutil.TCPAck)
	ptbFlow6.SrcPort = 41000
	p4, p6 := ptb4(ptbFlow4), ptb6(ptbFlow6)
	ptbNoVIP := ptb4(tcpTo(vip4Empty.Next().Next().Next(), client4, 80, 0))
	echo := testutil.Packet{Src: client4, Dst: vip4, Proto: testutil.ProtoICMP, ICMPType: 8}

	withOptions := syn4
	withOptions.IPOptions = []byte{1, 1, 1, 0} // NOP NOP NOP EOL
	optionsNoVIP := withOptions
	optionsNoVIP.Dst = client4.Next()
	mf := udp4
	mf.MoreFragments = true
	offset := udp4
	offset.FragOffset = 100
	frag6 := udp6
	frag6.IPv6Ext = 44
	gre := testutil.Packet{Src: client4, Dst: vip4, Proto: 47, Payload: make([]byte, 8)}

	arp := append(testutil.Packet{Src: client4}.EthHeader()[:12], 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)

	hbh := udp6.Bytes()
	hbh[14+6] = 0 // next header: hop-by-hop options

	tests := []struct {
		name   string
		in     []byte
		want   Action
		out    []byte // nil: the input, untouched
		counts map[string]uint64
	}{
		{"ipv4 tcp syn ipip", syn4.Bytes(), ActionTX, encapsulated(syn4, be4(syn4), h(syn4)), fwd(be4(syn4), syn4)},
		{"ipv4 tcp established without flow state", ack4.Bytes(), ActionTX, encapsulated(ack4, be4(ack4), h(ack4)), fwd(be4(ack4), ack4)},
		{"ipv4 udp ipip", udp4.Bytes(), ActionTX, encapsulated(udp4, be4(udp4), h(udp4)), fwd(be4(udp4), udp4)},
		{"ipv6 tcp syn ip6ip6", syn6.Bytes(), ActionTX, encapsulated(syn6, be6(syn6), h(syn6)), fwd(be6(syn6), syn6)},
		{"ipv6 tcp established without flow state", ack6.Bytes(), ActionTX, encapsulated(ack6, be6(ack6), h(ack6)), fwd(be6(ack6), ack6)},
		{"ipv6 udp ip6ip6", udp6.Bytes(), ActionTX, encapsulated(udp6, be6(udp6), h(udp6)), fwd(be6(udp6), udp6)},
		{"ipv4 l2 dsr", dsr4.Bytes(), ActionTX, rewritten(dsr4, be4(dsr4)), fwd(be4(dsr4), dsr4)},
		{"ipv6 l2 dsr", dsr6.Bytes(), ActionTX, rewritten(dsr6, be6(dsr6)), fwd(be6(dsr6), dsr6)},
		{"l2 dsr at the mtu", dsrFull.Bytes(), ActionTX, rewritten(dsrFull, be4(dsrFull)), fwd(be4(dsrFull), dsrFull)},
		{"port wildcard vip", anyPort.Bytes(), ActionTX, encapsulated(anyPort, be4(anyPort), h(anyPort)), fwd(be4(anyPort), anyPort)},
		{"source ip hashing", srcOnly.Bytes(), ActionTX, encapsulated(srcOnly, expectedBackend(v4, flowOf(srcOnly), true), h(srcOnly)), fwd(expectedBackend(v4, flowOf(srcOnly), true), srcOnly)},
		{"source ip hashing other port same backend", srcOnlyOther.Bytes(), ActionTX, encapsulated(srcOnlyOther, expectedBackend(v4, flowOf(srcOnly), true), h(srcOnlyOther)), fwd(expectedBackend(v4, flowOf(srcOnly), true), srcOnlyOther)},
		{"vlan tag kept", vlan.Bytes(), ActionTX, encapsulated(vlan, be4(vlan), h(vlan)), fwd(be4(vlan), vlan)},
		{"ipip at the mtu", fits.Bytes(), ActionTX, encapsulated(fits, be4(fits), h(fits)), fwd(be4(fits), fits)},
		{"icmp frag needed to the flow's backend", p4.Bytes(), ActionTX, encapsulated(p4, be4(ptbFlow4), h(ptbFlow4)), fwd(be4(ptbFlow4), p4)},
		{"icmpv6 packet too big to the flow's backend", p6.Bytes(), ActionTX, encapsulated(p6, be6(ptbFlow6), h(ptbFlow6)), fwd(be6(ptbFlow6), p6)},

		{"ipv4 not a vip", tcpTo(vip4.Prev(), client4, 80, testutil.TCPSyn).Bytes(), ActionPass, nil, exit("no_vip")},
		{"vip address other port", tcpTo(vip4, client4, 81, testutil.TCPSyn).Bytes(), ActionPass, nil, exit("no_vip")},
		{"vip address other protocol", udpTo(vip4, client4, 80).Bytes(), ActionPass, nil, exit("no_vip")},
		{"ipv6 not a vip", tcpTo(vip6.Next(), client6, 80, testutil.TCPSyn).Bytes(), ActionPass, nil, exit("no_vip")},
		{"icmp too big not for a vip", ptbNoVIP.Bytes(), ActionPass, nil, exit("no_vip")},
		{"icmp echo", echo.Bytes(), ActionPass, nil, exit("other_proto")},
		{"gre", gre.Bytes(), ActionPass, nil, exit("other_proto")},
		{"arp", arp, ActionPass, nil, exit("not_ip")},
		{"ipv4 more fragments", mf.Bytes(), ActionPass, nil, exit("fragment")},
		{"ipv4 fragment offset", offset.Bytes(), ActionPass, nil, exit("fragment")},
		{"ipv6 fragment header", frag6.Bytes(), ActionPass, nil, exit("fragment")},
		{"ipv6 hop-by-hop header", hbh, ActionPass, nil, exit("ipv6_ext")},
		{"ipv4 options to a vip", withOptions.Bytes(), ActionDrop, nil, exit("ip_options")},
		{"ipv4 options not to a vip", optionsNoVIP.Bytes(), ActionPass, nil, exit("no_vip")},
		{"too big to encapsulate", big.Bytes(), ActionDrop, nil, exit("too_big")},
		{"vip without table", tcpTo(vip4Empty, client4, 80, testutil.TCPSyn).Bytes(), ActionDrop, nil, exit("no_backend")},
		{"backend of the other family", tcpTo(vip4Mixed, client4, 80, testutil.TCPSyn).Bytes(), ActionDrop, nil, exit("bad_backend")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, d)
			got, out, err := d.Program().Run(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("verdict %s, want %s", got, tc.want)
			}
			want := tc.out
			if want == nil {
				want = tc.in
			}
			diffBytes(t, out, want)
			if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, tc.counts) {
				t.Errorf("counters changed by %v, want %v", delta, tc.counts)
			}
		})
	}
}

// TestMalformed truncates packets at every length from 14 bytes on and
// corrupts header fields: the program passes them untouched, counted.
func TestMalformed(t *testing.T) {
	d := newTestDatapath(t)
	pkts := map[string]testutil.Packet{
		"ipv4 tcp":  tcpTo(vip4, client4, 80, testutil.TCPSyn),
		"ipv6 tcp":  tcpTo(vip6, client6, 80, testutil.TCPSyn),
		"ipv4 udp":  udpTo(vip4, client4, 53),
		"ipv6 udp":  udpTo(vip6, client6, 53),
		"icmp ptb":  ptb4(tcpTo(vip4, client4, 80, 0)),
		"icmp6 ptb": ptb6(tcpTo(vip6, client6, 80, 0)),
	}
	vlan := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	vlan.VLAN = 7
	pkts["vlan ipv4 tcp"] = vlan
	for name, p := range pkts {
		full := p.Bytes()
		hdrs := len(full) - len(p.Payload)
		if p.Proto == testutil.ProtoICMP || p.Proto == testutil.ProtoICMPv6 {
			hdrs = len(full) // the quoted header is needed too
		}
		for n := 14; n < hdrs; n++ {
			in := full[:n]
			before := takeSnapshot(t, d)
			got, out, err := d.Program().Run(in)
			if err != nil {
				t.Fatal(err)
			}
			if got != ActionPass || !bytes.Equal(out, in) {
				t.Errorf("%s cut to %d bytes: verdict %s, changed %v", name, n, got, !bytes.Equal(out, in))
			}
			if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, map[string]uint64{"exit malformed": 1}) {
				t.Errorf("%s cut to %d bytes: counters %v, want one malformed", name, n, delta)
			}
		}
	}

	base := tcpTo(vip4, client4, 80, testutil.TCPSyn).Bytes()
	base6 := tcpTo(vip6, client6, 80, testutil.TCPSyn).Bytes()
	corrupt := []struct {
		name string
		in   []byte
		at   int
		val  byte
	}{
		{"ipv4 version 5", base, 14, 0x55},
		{"ipv4 ihl 4", base, 14, 0x44},
		{"ipv4 total length beyond the frame", base, 16, 0xff},
		{"ipv4 total length below the header", base, 17, 10},
		{"tcp data offset 4", base, 14 + 20 + 12, 0x40},
		{"ipv4 total length ends inside the tcp header", base, 17, 20 + 10},
		{"ipv6 payload length ends inside the tcp header", base6, 19, 10},
		{"ipv6 version 4", base6, 14, 0x40},
		{"ipv6 payload length beyond the frame", base6, 18, 0xff},
	}
	for _, c := range corrupt {
		in := bytes.Clone(c.in)
		in[c.at] = c.val
		if c.name == "ipv4 total length below the header" {
			in[16] = 0
		}
		before := takeSnapshot(t, d)
		got, out, err := d.Program().Run(in)
		if err != nil {
			t.Fatal(err)
		}
		if got != ActionPass || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %s, changed %v", c.name, got, !bytes.Equal(out, in))
		}
		if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, map[string]uint64{"exit malformed": 1}) {
			t.Errorf("%s: counters %v, want one malformed", c.name, delta)
		}
	}
}

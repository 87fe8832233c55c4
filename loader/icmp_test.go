package loader

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net"
	"slices"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

// tooBigReply is the frame xdp_lb should send back for pkt, built
// independently of the datapath: an ICMP "fragmentation needed" (IPv4) or
// ICMPv6 "packet too big" from the VIP to the client, MACs swapped, the
// VLAN tag kept, quoting the first 64 (IPv4) or 104 (IPv6) bytes of pkt's
// IP packet, naming mtu.
func tooBigReply(pkt testutil.Packet, mtu uint32) []byte {
	l3 := pkt.L3()
	r := testutil.Packet{
		DstMAC: pkt.SrcMAC, SrcMAC: pkt.DstMAC, VLAN: pkt.VLAN,
		Src: pkt.Dst, Dst: pkt.Src, TTL: 64, ICMPRest: mtu,
	}
	// The test packets leave the MACs to the builder's defaults.
	if r.DstMAC == nil {
		r.DstMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	}
	if r.SrcMAC == nil {
		r.SrcMAC = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	}
	if pkt.Src.Is4() {
		r.Proto, r.ICMPType, r.ICMPCode = testutil.ProtoICMP, 3, 4
		r.Payload = l3[:64]
	} else {
		r.Proto, r.ICMPType = testutil.ProtoICMPv6, 2
		r.Payload = l3[:104]
	}
	return r.Bytes()
}

// withL3Len gives p a payload that makes its IP packet n bytes long.
func withL3Len(p testutil.Packet, n int) testutil.Packet {
	p.Payload = nil
	p.Payload = make([]byte, n-len(p.L3()))
	for i := range p.Payload {
		p.Payload[i] = byte(i*7 + 3)
	}
	return p
}

// TestICMPTooBig: a VIP packet that does not fit the MTU towards the
// backends once encapsulated is answered with ICMP "too big" naming the
// MTU the client must use; every output byte is compared (checksums, the
// quoted packet, the MTU field), and the counters.
func TestICMPTooBig(t *testing.T) {
	d := newTestDatapath(t)
	exit := func(reason string) map[string]uint64 { return map[string]uint64{"exit " + reason: 1} }

	tcp4 := withL3Len(tcpTo(vip4, client4, 80, testutil.TCPAck), 1481) // 1501 once encapsulated
	tcp4fits := withL3Len(tcpTo(vip4, client4, 80, testutil.TCPAck), 1480)
	udp4 := withL3Len(udpTo(vip4, client4, 53), 1481)
	udp4.DF = true
	noDF := udp4
	noDF.DF = false
	vlan := tcp4
	vlan.VLAN = 42
	vlan.SrcPort = 40200
	tcp6 := withL3Len(tcpTo(vip6, client6, 80, testutil.TCPAck), 1461) // 1501 once encapsulated
	udp6 := withL3Len(udpTo(vip6, client6, 53), 1461)
	dsr4 := withL3Len(udpTo(vip4DSR, client4, 53), 1501)
	dsr4.DF = true
	dsr6 := withL3Len(udpTo(vip6DSR, client6, 53), 1501)
	// An ICMP error about a flow, too big itself: never answered.
	bigPTB := ptb4(tcpTo(vip4, client4, 80, 0))
	bigPTB.DF = true
	bigPTB.Payload = append(bigPTB.Payload, make([]byte, 1500)...)

	tests := []struct {
		name   string
		in     testutil.Packet
		want   Action
		out    []byte // nil: the input, untouched
		counts map[string]uint64
	}{
		{"ipv4 tcp", tcp4, ActionTX, tooBigReply(tcp4, 1480), exit("icmp_too_big")},
		{"ipv4 udp with df", udp4, ActionTX, tooBigReply(udp4, 1480), exit("icmp_too_big")},
		{"ipv4 vlan", vlan, ActionTX, tooBigReply(vlan, 1480), exit("icmp_too_big")},
		{"ipv6 tcp", tcp6, ActionTX, tooBigReply(tcp6, 1460), exit("icmp_too_big")},
		{"ipv6 udp", udp6, ActionTX, tooBigReply(udp6, 1460), exit("icmp_too_big")},
		{"ipv4 l2 dsr", dsr4, ActionTX, tooBigReply(dsr4, 1500), exit("icmp_too_big")},
		{"ipv6 l2 dsr", dsr6, ActionTX, tooBigReply(dsr6, 1500), exit("icmp_too_big")},
		{"ipv4 without df: dropped", noDF, ActionDrop, nil, exit("too_big")},
		{"icmp error too big: dropped", bigPTB, ActionDrop, nil, exit("too_big")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.Bytes()
			before := takeSnapshot(t, d)
			got, out, err := d.Program().Run(in)
			must(t, err)
			if got != tc.want {
				t.Errorf("verdict %s, want %s", got, tc.want)
			}
			want := tc.out
			if want == nil {
				want = in
			}
			diffBytes(t, out, want)
			if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, tc.counts) {
				t.Errorf("counters changed by %v, want %v", delta, tc.counts)
			}
		})
	}

	// An established flow (served from the flow cache after two packets)
	// is answered the same way, and goes on once it fits.
	t.Run("established flow", func(t *testing.T) {
		for range 2 {
			act, _, err := d.Program().Run(tcp4fits.Bytes())
			must(t, err)
			if act != ActionTX {
				t.Fatalf("fitting packet: %s", act)
			}
		}
		act, out, err := d.Program().Run(tcp4.Bytes())
		must(t, err)
		if act != ActionTX {
			t.Errorf("verdict %s, want XDP_TX", act)
		}
		diffBytes(t, out, tooBigReply(tcp4, 1480))
	})

	// Bytes after the IP packet (padding; a long tail reaches the program
	// as fragments under BPF_PROG_RUN) are cut as well.
	t.Run("frame longer than the packet", func(t *testing.T) {
		in := append(tcp4.Bytes(), bytes.Repeat([]byte{0xdc}, 3000)...)
		act, out, err := d.Program().Run(in)
		must(t, err)
		if act != ActionTX {
			t.Errorf("verdict %s, want XDP_TX", act)
		}
		diffBytes(t, out, tooBigReply(tcp4, 1480))
	})

	// An MTU that leaves less than IPv6's minimum names 1280.
	t.Run("ipv6 minimum mtu", func(t *testing.T) {
		must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1300}))
		t.Cleanup(func() {
			must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1500}))
		})
		p := withL3Len(tcpTo(vip6, client6, 80, testutil.TCPAck), 1261)
		act, out, err := d.Program().Run(p.Bytes())
		must(t, err)
		if act != ActionTX {
			t.Errorf("verdict %s, want XDP_TX", act)
		}
		diffBytes(t, out, tooBigReply(p, 1280))
	})
}

// TestICMPTooBigChecksums checks the answers against the Internet checksum
// directly (the expected frames above use the same test builder as the
// inputs): the IPv4 header and ICMP message sum to zero, and so do the
// ICMPv6 message and its pseudo-header.
func TestICMPTooBigChecksums(t *testing.T) {
	d := newTestDatapath(t)
	for _, p := range []testutil.Packet{
		withL3Len(tcpTo(vip4, client4, 80, testutil.TCPAck), 1481),
		withL3Len(tcpTo(vip6, client6, 80, testutil.TCPAck), 1461),
	} {
		act, out, err := d.Program().Run(p.Bytes())
		must(t, err)
		if act != ActionTX {
			t.Fatalf("%s: verdict %s", p.Src, act)
		}
		l3 := out[14:]
		if p.Src.Is4() {
			if len(l3) != 20+8+64 {
				t.Fatalf("ipv4 answer is %d bytes, want 92", len(l3))
			}
			if c := testutil.Checksum(l3[:20]); c != 0 {
				t.Errorf("ipv4 header checksum does not verify (%#x)", c)
			}
			if c := testutil.Checksum(l3[20:]); c != 0 {
				t.Errorf("icmp checksum does not verify (%#x)", c)
			}
			if mtu := binary.BigEndian.Uint16(l3[26:]); mtu != 1480 {
				t.Errorf("next-hop mtu %d, want 1480", mtu)
			}
			if !bytes.Equal(l3[28:], p.L3()[:64]) {
				t.Errorf("quoted packet differs")
			}
			continue
		}
		if len(l3) != 40+8+104 {
			t.Fatalf("ipv6 answer is %d bytes, want 152", len(l3))
		}
		pseudo := append(append([]byte{}, l3[8:40]...), 0, 0, 0, 112, 0, 0, 0, 58)
		if c := testutil.Checksum(append(pseudo, l3[40:]...)); c != 0 {
			t.Errorf("icmpv6 checksum does not verify (%#x)", c)
		}
		if mtu := binary.BigEndian.Uint32(l3[44:]); mtu != 1460 {
			t.Errorf("mtu %d, want 1460", mtu)
		}
		if !bytes.Equal(l3[48:], p.L3()[:104]) {
			t.Errorf("quoted packet differs")
		}
	}
}

// TestICMPRateLimit: each CPU answers at most the burst at once, then
// drops (icmp_limited); answers can be turned off (too_big).
func TestICMPRateLimit(t *testing.T) {
	d := newTestDatapath(t)
	pinThread(t) // the budget is per CPU
	big := withL3Len(tcpTo(vip4, client4, 80, testutil.TCPAck), 1481).Bytes()
	run := func() Action {
		act, _, err := d.Program().Run(big)
		must(t, err)
		return act
	}
	// One answer per second, three at once: a fresh datapath's budget
	// fills to the burst at the first call, and six calls take far less
	// than the second that would pay for a fourth answer.
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1500, ICMPRate: 1, ICMPBurst: 3}))
	before := takeSnapshot(t, d)
	var got []Action
	for range 6 {
		got = append(got, run())
	}
	want := []Action{ActionTX, ActionTX, ActionTX, ActionDrop, ActionDrop, ActionDrop}
	if !slices.Equal(got, want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}
	if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, map[string]uint64{"exit icmp_too_big": 3, "exit icmp_limited": 3}) {
		t.Errorf("counters changed by %v", delta)
	}

	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1500, ICMPRate: -1}))
	before = takeSnapshot(t, d)
	if act := run(); act != ActionDrop {
		t.Errorf("answers off: verdict %s, want XDP_DROP", act)
	}
	if delta := before.delta(takeSnapshot(t, d)); !maps.Equal(delta, map[string]uint64{"exit too_big": 1}) {
		t.Errorf("answers off: counters changed by %v", delta)
	}
}

// TestICMPConfigInvalid: rates and bursts out of range are refused by
// name and change nothing.
func TestICMPConfigInvalid(t *testing.T) {
	for _, c := range []Config{
		{SourceMAC: balancerMAC, ICMPRate: maxICMPRate + 1},
		{SourceMAC: balancerMAC, ICMPBurst: -1},
		{SourceMAC: balancerMAC, ICMPBurst: maxICMPBurst + 1},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}

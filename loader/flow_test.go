package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/maglev"
)

// backendOf runs pkt and returns the backend it was sent to, by the outer
// destination (IPIP) or the destination MAC.
func backendOf(t *testing.T, d *Datapath, pkt testutil.Packet) uint32 {
	t.Helper()
	act, out, err := d.Program().Run(pkt.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if act != ActionTX {
		t.Fatalf("verdict %s, want XDP_TX", act)
	}
	return uint32(binary.BigEndian.Uint16(out[4:6]))
}

// connect sends syn and then its ACK through d, checks that both went to
// the same backend and returns it: the ACK puts the flow into the flow
// table.
func connect(t *testing.T, d *Datapath, syn testutil.Packet) uint32 {
	t.Helper()
	got := backendOf(t, d, syn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	if b := backendOf(t, d, ack); b != got {
		t.Fatalf("the ACK went to backend %d, its SYN to %d", b, got)
	}
	return got
}

// tableWithout returns a table of the given size where the flow's slot
// holds id and every other slot other.
func tableFor(f Flow, id, other uint32) []uint32 {
	t := roundRobin(tableSize, other)
	t[FlowHash(f, DefaultHashSeed, false)%tableSize] = id
	return t
}

func TestFlowStickiness(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	f := flowOf(syn)

	must(t, d.SetTable(1, tableFor(f, 1, 2)))
	if got := backendOf(t, d, syn); got != 1 {
		t.Fatalf("syn went to backend %d, want 1", got)
	}
	// The backend set changes: the flow's slot now names backend 3.
	must(t, d.SetTable(1, tableFor(f, 3, 2)))
	if got := backendOf(t, d, ack); got != 1 {
		t.Errorf("established flow moved to backend %d after a table change, want 1", got)
	}
	other := syn
	other.SrcPort = 50001
	if got, want := backendOf(t, d, other), uint32(2); got != want {
		t.Errorf("new flow went to %d, want %d from the new table", got, want)
	}
	// Draining: established flows stay, new ones (a SYN) follow the table.
	b1 := testBackend(1)
	b1.UsableNew = false
	must(t, d.PutBackend(1, b1))
	if got := backendOf(t, d, ack); got != 1 {
		t.Errorf("flow left its draining backend for %d", got)
	}
	if got := backendOf(t, d, syn); got != 3 {
		t.Errorf("syn went to %d, want 3: a SYN selects again", got)
	}
	// The flow is on 3 now; 3 is removed: re-steered by the table.
	must(t, d.SetTable(1, tableFor(f, 4, 2)))
	if got := backendOf(t, d, ack); got != 3 {
		t.Errorf("flow moved to %d before its backend was removed", got)
	}
	must(t, d.RemoveBackend(3))
	if got := backendOf(t, d, ack); got != 4 {
		t.Errorf("flow of a removed backend went to %d, want 4", got)
	}
	// And sticks there.
	must(t, d.PutBackend(3, testBackend(3)))
	must(t, d.SetTable(1, tableFor(f, 3, 2)))
	if got := backendOf(t, d, ack); got != 4 {
		t.Errorf("re-steered flow moved again to %d", got)
	}
	// An ICMP "fragmentation needed" about the flow follows the flow, not
	// the table.
	if got := backendOf(t, d, ptb4(ack)); got != 4 {
		t.Errorf("icmp frag needed went to %d, want the flow's backend 4", got)
	}
	// For IPv6 too, through the flow table (the cache is TCP-only but
	// the entry is the same).
	syn6 := tcpTo(vip6, client6, 80, testutil.TCPSyn)
	must(t, d.SetTable(10, tableFor(flowOf(syn6), 11, 12)))
	if got := backendOf(t, d, syn6); got != 11 {
		t.Fatalf("ipv6 syn went to %d, want 11", got)
	}
	must(t, d.SetTable(10, tableFor(flowOf(syn6), 13, 12)))
	if got := backendOf(t, d, ptb6(syn6)); got != 11 {
		t.Errorf("icmpv6 packet too big went to %d, want the flow's backend 11", got)
	}
}

func TestUDPTimeout(t *testing.T) {
	d := newTestDatapath(t)
	pkt := udpTo(vip4, client4, 53)
	f := flowOf(pkt)
	cfg := Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6}
	must(t, d.SetTable(2, tableFor(f, 1, 2)))
	if got := backendOf(t, d, pkt); got != 1 {
		t.Fatalf("udp flow went to %d, want 1", got)
	}
	must(t, d.SetTable(2, tableFor(f, 3, 2)))
	if got := backendOf(t, d, pkt); got != 1 {
		t.Errorf("udp flow within its timeout moved to %d", got)
	}
	// Every flow is idle for longer than a nanosecond: reselects.
	cfg.UDPTimeout = time.Nanosecond
	must(t, d.SetConfig(cfg))
	if got := backendOf(t, d, pkt); got != 3 {
		t.Errorf("idle udp flow stayed on %d, want 3", got)
	}
}

// TestDistribution sends 100k random flows through Maglev tables built
// with weights 1:2:3:4 and checks each backend's share.
func TestDistribution(t *testing.T) {
	d := newTestDatapath(t)
	set := []maglev.Backend{{Key: "198.51.100.11", Weight: 1}, {Key: "198.51.100.12", Weight: 2}, {Key: "198.51.100.13", Weight: 3}, {Key: "198.51.100.14", Weight: 4}}
	ids := []uint32{1, 2, 3, 4}
	const size = 65537
	pos, err := maglev.Build(set, size)
	must(t, err)
	table := make([]uint32, size)
	for i, p := range pos {
		table[i] = ids[p]
	}
	must(t, d.PutVIP(VIPKey{vip4, 443, 6}, VIP{ID: 20, TableSize: size}))
	must(t, d.SetTable(20, table))
	got, err := d.Table(20)
	must(t, err)
	if !slicesEqual(got, table) {
		t.Fatal("Table does not read back what SetTable installed")
	}

	rng := rand.New(rand.NewPCG(1, 2))
	const flows = 100000
	counts := map[uint32]int{}
	for range flows {
		var src [4]byte
		binary.BigEndian.PutUint32(src[:], 0xc6336400|rng.Uint32()&0xff) // 198.51.100.0/24
		pkt := tcpTo(vip4, netip.AddrFrom4(src), 443, testutil.TCPSyn)
		pkt.SrcPort = uint16(1024 + rng.IntN(64511))
		counts[backendOf(t, d, pkt)]++
	}
	total := 0
	for _, b := range set {
		total += int(b.Weight)
	}
	for i, b := range set {
		want := float64(b.Weight) / float64(total)
		share := float64(counts[ids[i]]) / flows
		if diff := share - want; diff > 0.02 || diff < -0.02 {
			t.Errorf("backend %s: %.2f%% of flows, want %.2f%% ± 2", b.Key, 100*share, 100*want)
		}
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDecapRoundTrip: xdp_decap(xdp_lb(p)) is p with the balancer's
// Ethernet addresses.
func TestDecapRoundTrip(t *testing.T) {
	d := newTestDatapath(t)
	decap, err := LoadDecap()
	must(t, err)
	t.Cleanup(func() { decap.Close() })
	vlan := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	vlan.VLAN = 100
	for name, p := range map[string]testutil.Packet{
		"ipv4 tcp": tcpTo(vip4, client4, 80, testutil.TCPSyn),
		"ipv6 tcp": tcpTo(vip6, client6, 80, testutil.TCPSyn),
		"ipv4 udp": udpTo(vip4, client4, 53),
		"ipv6 udp": udpTo(vip6, client6, 53),
		"vlan":     vlan,
	} {
		act, enc, err := d.Program().Run(p.Bytes())
		must(t, err)
		if act != ActionTX {
			t.Fatalf("%s: xdp_lb verdict %s", name, act)
		}
		act, out, err := decap.Run(enc)
		must(t, err)
		if act != ActionPass {
			t.Errorf("%s: xdp_decap verdict %s, want XDP_PASS", name, act)
		}
		want := p
		want.DstMAC = enc[0:6]
		want.SrcMAC = balancerMAC
		if !bytes.Equal(out, want.Bytes()) {
			t.Errorf("%s: decapsulated packet differs\n got %x\nwant %x", name, out, want.Bytes())
		}
	}
	// Not a tunnel packet: untouched.
	plain := tcpTo(vip4, client4, 80, testutil.TCPSyn).Bytes()
	act, out, err := decap.Run(plain)
	must(t, err)
	if act != ActionPass || !bytes.Equal(out, plain) {
		t.Errorf("xdp_decap changed a plain packet: %s", act)
	}
}

// FuzzXDPLB: random bytes, or random changes to a VIP packet, never give
// XDP_ABORTED; a packet that is not for a VIP is passed untouched.
func FuzzXDPLB(f *testing.F) {
	f.Add(tcpTo(vip4, client4, 80, testutil.TCPSyn).Bytes())
	// The SYN's ACK: a pending choice put into the flow table.
	f.Add(tcpTo(vip4, client4, 80, testutil.TCPAck).Bytes())
	f.Add(tcpTo(vip6, client6, 80, testutil.TCPSyn).Bytes())
	f.Add(udpTo(vip4DSR, client4, 53).Bytes())
	// A stateless VIP's datagram, and ICMP "too big" about one.
	f.Add(udpTo(vip4, client4, statelessVIP.Port).Bytes())
	f.Add(ptb4(udpTo(vip4, client4, statelessVIP.Port)).Bytes())
	f.Add(ptb4(tcpTo(vip4, client4, 80, 0)).Bytes())
	f.Add(ptb6(tcpTo(vip6, client6, 80, 0)).Bytes())
	f.Add(make([]byte, 14))
	// Too big once encapsulated: answered with ICMP.
	f.Add(withL3Len(tcpTo(vip4, client4, 80, testutil.TCPAck), 1481).Bytes())
	f.Add(withL3Len(tcpTo(vip6, client6, 80, testutil.TCPAck), 1461).Bytes())
	d := newTestDatapath(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 {
			return
		}
		act, out, err := d.Program().Run(in)
		if err != nil {
			t.Fatal(err)
		}
		switch act {
		case ActionAborted:
			t.Fatalf("XDP_ABORTED for %x", in)
		case ActionPass, ActionDrop:
			if !bytes.Equal(out, in) {
				t.Fatalf("%s changed the packet %x", act, in)
			}
		case ActionTX:
			if !forVIP(in) {
				t.Fatalf("forwarded a packet that is not for a VIP: %x", in)
			}
			if err := checkICMPAnswer(out); err != nil {
				t.Fatalf("%v; input %x output %x", err, in, out)
			}
		}
	})
}

// checkICMPAnswer checks an ICMP "too big" answer xdp_lb sent (an output
// frame that is no encapsulated packet): its length, and that its
// checksums verify.
func checkICMPAnswer(out []byte) error {
	off := 14
	if et := binary.BigEndian.Uint16(out[12:]); et == 0x8100 || et == 0x88a8 {
		off = 18
	}
	l3 := out[off:]
	switch {
	case len(l3) >= 20 && l3[0] == 0x45 && l3[9] == testutil.ProtoICMP:
		if len(l3) != 20+8+64 || testutil.Checksum(l3[:20]) != 0 || testutil.Checksum(l3[20:]) != 0 || l3[20] != 3 || l3[21] != 4 {
			return errors.New("bad icmp answer")
		}
	case len(l3) >= 40 && l3[0]>>4 == 6 && l3[6] == testutil.ProtoICMPv6:
		pseudo := append(append([]byte{}, l3[8:40]...), 0, 0, 0, 112, 0, 0, 0, 58)
		if len(l3) != 40+8+104 || testutil.Checksum(append(pseudo, l3[40:]...)) != 0 || l3[40] != 2 {
			return errors.New("bad icmpv6 answer")
		}
	}
	return nil
}

// forVIP reports whether the frame is addressed to one of the test VIPs
// (or quotes a packet from one, for ICMP errors).
func forVIP(b []byte) bool {
	off := 14
	if binary.BigEndian.Uint16(b[12:]) == 0x8100 || binary.BigEndian.Uint16(b[12:]) == 0x88a8 {
		off = 18
	}
	vips := map[netip.Addr]bool{}
	for _, v := range testVIPs {
		vips[v.key.Addr] = true
	}
	has := func(a netip.Addr) bool { return vips[a] }
	if len(b) >= off+40 && b[off]>>4 == 6 {
		dst := netip.AddrFrom16([16]byte(b[off+24 : off+40]))
		if has(dst) {
			return true
		}
		if len(b) >= off+48+24 {
			return has(netip.AddrFrom16([16]byte(b[off+48+8 : off+48+24]))) // quoted source
		}
		return false
	}
	if len(b) >= off+20 {
		if has(netip.AddrFrom4([4]byte(b[off+16 : off+20]))) {
			return true
		}
		if len(b) >= off+20+8+16 {
			return has(netip.AddrFrom4([4]byte(b[off+28+12 : off+28+16])))
		}
	}
	return false
}

// TestStructSizes: the Go structs match the C layout.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"vip_key", unsafe.Sizeof(lbVipKey{}), 20},
		{"vip_meta", unsafe.Sizeof(lbVipMeta{}), 12},
		{"backend", unsafe.Sizeof(lbBackend{}), 24},
		{"flow_key", unsafe.Sizeof(lbFlowKey{}), 40},
		{"flow", unsafe.Sizeof(lbFlow{}), 24},
		{"config", unsafe.Sizeof(lbConfig{}), 64},
		{"icmp_budget", unsafe.Sizeof(lbIcmpBudget{}), 16},
		{"icmp_limit", unsafe.Sizeof(lbIcmpLimit{}), 16},
		{"counters", unsafe.Sizeof(lbCounters{}), 16},
		{"flow_cache_slot", unsafe.Sizeof(lbFlowCacheSlot{}), 96},
	} {
		if c.got != c.want {
			t.Errorf("struct %s: %d bytes in Go, want %d", c.name, c.got, c.want)
		}
	}
}

// TestStructSizesMatchMaps: the maps loaded from the object have the
// value and key sizes of the Go structs, and one exit counter per reason.
func TestStructSizesMatchMaps(t *testing.T) {
	spec, err := loadLb()
	must(t, err)
	for name, want := range map[string][2]uintptr{
		"vips":        {unsafe.Sizeof(lbVipKey{}), unsafe.Sizeof(lbVipMeta{})},
		"backends":    {4, unsafe.Sizeof(lbBackend{})},
		"flows":       {unsafe.Sizeof(lbFlowKey{}), unsafe.Sizeof(lbFlow{})},
		"settings":    {4, unsafe.Sizeof(lbConfig{})},
		"icmp_limits": {4, unsafe.Sizeof(lbIcmpLimit{})},
		"vip_retired": {4, unsafe.Sizeof(lbCounters{})},
	} {
		m := spec.Maps[name]
		if uintptr(m.KeySize) != want[0] || uintptr(m.ValueSize) != want[1] {
			t.Errorf("map %s: key %d value %d, want %d %d", name, m.KeySize, m.ValueSize, want[0], want[1])
		}
	}
	if got := spec.Maps["flow_cache"].MaxEntries; got != flowCacheSize {
		t.Errorf("flow_cache has %d slots, the loader assumes %d", got, flowCacheSize)
	}
	if got := spec.Maps["exits"].MaxEntries; int(got) != len(ExitReasons)+1 {
		t.Errorf("exits map has %d entries, want %d (ExitReasons + none)", got, len(ExitReasons)+1)
	}
	for _, size := range SupportedTableSizes {
		inner := spec.Maps["tables_"+itoa(size)].InnerMap
		if inner.ValueSize != 4*size {
			t.Errorf("tables_%d: inner value size %d, want %d", size, inner.ValueSize, 4*size)
		}
	}
}

// TestRemoveVIPEndsFlows: established flows of a removed VIP are not
// forwarded any more; another VIP on the same address keeps working.
func TestRemoveVIPEndsFlows(t *testing.T) {
	d := newTestDatapath(t)
	ack := tcpTo(vip4, client4, 80, testutil.TCPAck)
	udp := udpTo(vip4, client4, 53)
	// Twice each: the second packet puts the flow in the flow cache.
	for range 2 {
		backendOf(t, d, ack)
		backendOf(t, d, udp)
	}
	// A second TCP flow that the flow table has evicted but the cache
	// still holds: the VIP's removal cannot find it in the flow table.
	evicted := ack
	evicted.SrcPort++
	for range 2 {
		backendOf(t, d, evicted)
	}
	k := flowKeyOf(evicted)
	must(t, d.objs.Flows.Delete(&k))
	must(t, d.RemoveVIP(VIPKey{vip4, 80, 6}))
	for _, p := range []testutil.Packet{ack, evicted} {
		act, _, err := d.Program().Run(p.Bytes())
		must(t, err)
		if act != ActionPass {
			t.Errorf("established flow from port %d of a removed vip: %s, want XDP_PASS", p.SrcPort, act)
		}
	}
	backendOf(t, d, udp) // vip4:53/udp still forwards: the filter bit stays
	must(t, d.RemoveVIP(VIPKey{vip4, 53, 17}))
	act, _, err := d.Program().Run(udp.Bytes())
	must(t, err)
	if act != ActionPass {
		t.Errorf("flow of the last vip on the address: %s, want XDP_PASS", act)
	}
	// Changing a VIP's mode re-selects its flows with the new mode.
	dsr := udpTo(vip4DSR, client4, 53)
	backendOf(t, d, dsr)
	backendOf(t, d, dsr)
	must(t, d.PutVIP(VIPKey{vip4DSR, 53, 17}, VIP{ID: 4, Mode: ModeIPIP, TableSize: tableSize}))
	_, out, err := d.Program().Run(dsr.Bytes())
	must(t, err)
	if len(out) != len(dsr.Bytes())+20 {
		t.Errorf("flow kept L2 DSR after its vip changed to IPIP (%d bytes out)", len(out))
	}
}

// TestFlowCacheCollision: two TCP flows sharing a flow cache slot both keep
// their backends; the one pushed out is found in the flow table and
// cached again.
func TestFlowCacheCollision(t *testing.T) {
	d := newTestDatapath(t)
	a := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	slotOf := func(p testutil.Packet) uint32 { return cacheSlot(flowKeyOf(p)) }
	// Find two client ports and addresses that share a slot.
	seen := map[uint32]testutil.Packet{}
	var b testutil.Packet
	found := false
	for i := 0; i < 1<<20 && !found; i++ {
		p := a
		p.SrcPort = uint16(1024 + i%60000)
		p.Src = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i/60000)})
		if q, ok := seen[slotOf(p)]; ok {
			a, b, found = q, p, true
		}
		seen[slotOf(p)] = p
	}
	if !found {
		t.Fatal("no colliding flows found")
	}
	// Each connects: SYN, then the ACK that puts it into the flow table.
	must(t, d.SetTable(1, tableFor(flowOf(a), 1, 2)))
	if got := connect(t, d, a); got != 1 {
		t.Fatalf("a went to %d, want 1", got)
	}
	must(t, d.SetTable(1, tableFor(flowOf(b), 3, 2)))
	if got := connect(t, d, b); got != 3 {
		t.Fatalf("b went to %d, want 3", got)
	}
	cachedKey := func() lbFlowKey {
		var s lbFlowCacheSlot
		must(t, d.objs.FlowCache.Lookup(slotOf(a), &s))
		return s.Key
	}
	if cachedKey() != flowKeyOf(b) {
		t.Fatal("the slot does not hold b after b's handshake")
	}
	must(t, d.SetTable(1, roundRobin(tableSize, 4)))
	a.TCPFlags, b.TCPFlags = testutil.TCPAck, testutil.TCPAck
	if got := backendOf(t, d, a); got != 1 {
		t.Errorf("a, pushed out of the cache, went to %d, want 1", got)
	}
	if cachedKey() != flowKeyOf(a) {
		t.Error("a was not cached again after its flow table hit")
	}
	if got := backendOf(t, d, b); got != 3 {
		t.Errorf("b went to %d, want 3", got)
	}
}

// TestFlowCacheUDPWriteBack: a UDP flow served from the cache keeps its
// newest last-seen time there, and gets it written back to the flow table
// when a colliding flow takes the slot.
func TestFlowCacheUDPWriteBack(t *testing.T) {
	d := newTestDatapath(t)
	seen := map[uint32]testutil.Packet{}
	var a, b testutil.Packet
	for i := 0; ; i++ {
		p := udpTo(vip4, client4, 53)
		p.SrcPort = uint16(1024 + i%60000)
		p.Src = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i/60000)})
		if q, ok := seen[cacheSlot(flowKeyOf(p))]; ok {
			a, b = q, p
			break
		}
		seen[cacheSlot(flowKeyOf(p))] = p
	}
	lastSeen := func(p testutil.Packet) uint64 {
		var f lbFlow
		k := flowKeyOf(p)
		must(t, d.objs.Flows.Lookup(&k, &f))
		return f.LastSeen
	}
	backendOf(t, d, a)
	t0 := lastSeen(a)
	backendOf(t, d, a) // from the cache
	var s lbFlowCacheSlot
	must(t, d.objs.FlowCache.Lookup(cacheSlot(flowKeyOf(a)), &s))
	if s.Key != flowKeyOf(a) || s.LastSeen <= t0 {
		t.Fatalf("slot %+v: want a with a last-seen time after %d", s, t0)
	}
	if got := lastSeen(a); got != t0 {
		t.Errorf("flow table last seen %d, want %d while the cache serves", got, t0)
	}
	backendOf(t, d, b) // takes the slot
	if got := lastSeen(a); got != s.LastSeen {
		t.Errorf("flow table last seen %d after eviction, want the cache's %d", got, s.LastSeen)
	}
}

// TestFlowCacheBackendChange: a flow served from the flow cache sees a
// change of its backend at its next packet (the cache's copy of the backend
// is invalidated by the generation the loader bumps), and SetConfig keeps
// the generation.
func TestFlowCacheBackendChange(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	fk := flowKeyOf(syn)
	gen := func() uint32 {
		var c lbConfig
		must(t, d.objs.Settings.Lookup(uint32(0), &c))
		return c.Gen
	}
	must(t, d.SetTable(1, tableFor(flowOf(syn), 1, 2)))
	if got := backendOf(t, d, syn); got != 1 {
		t.Fatalf("SYN went to %d, want 1", got)
	}
	if got := backendOf(t, d, ack); got != 1 {
		t.Fatalf("ACK went to %d, want 1", got)
	}
	var s lbFlowCacheSlot
	must(t, d.objs.FlowCache.Lookup(cacheSlot(fk), &s))
	if s.Key != fk || s.Gen != gen() || s.BackendId != 1 || s.Backend.Family != 4 {
		t.Fatalf("slot %+v: want the flow on backend 1 at generation %d", s, gen())
	}

	// A new MAC and address for backend 1: the next packet uses them.
	b := testBackend(1)
	b.MAC = backendMAC(9)
	b.Addr = netip.MustParseAddr("198.51.100.99")
	before := gen()
	must(t, d.PutBackend(1, b))
	if gen() == before {
		t.Fatal("PutBackend did not bump the generation")
	}
	act, out, err := d.Program().Run(ack.Bytes())
	must(t, err)
	if act != ActionTX || binary.BigEndian.Uint16(out[4:6]) != 9 {
		t.Fatalf("after the MAC change: %s to MAC %x, want XDP_TX to backend MAC %s", act, out[0:6], backendMAC(9))
	}
	if got := netip.AddrFrom4([4]byte(out[14+16 : 14+20])); got != b.Addr {
		t.Errorf("outer destination %s, want the new address %s", got, b.Addr)
	}

	// SetConfig keeps the generation.
	before = gen()
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1500}))
	if got := gen(); got != before {
		t.Fatalf("SetConfig changed the generation from %d to %d", before, got)
	}

	// Backend 1 no longer usable: the flow is re-steered at once. (The
	// new table alone moves no established flow.)
	must(t, d.SetTable(1, roundRobin(tableSize, 2)))
	if got := backendOf(t, d, ack); got != 9 {
		t.Fatalf("after the table change the flow went to %d, want 1 (MAC 9)", got)
	}
	b.UsableNew, b.UsableEstablished = false, false
	must(t, d.PutBackend(1, b))
	if got := backendOf(t, d, ack); got != 2 {
		t.Errorf("after backend 1 became unusable the flow went to %d, want 2", got)
	}
	// Removed backend: the same.
	must(t, d.SetTable(1, tableFor(flowOf(syn), 3, 3)))
	must(t, d.PutBackend(1, testBackend(1)))
	if got := backendOf(t, d, syn); got != 3 {
		t.Fatalf("SYN went to %d, want 3", got)
	}
	backendOf(t, d, ack)
	must(t, d.RemoveBackend(3))
	must(t, d.SetTable(1, roundRobin(tableSize, 4)))
	if got := backendOf(t, d, ack); got != 4 {
		t.Errorf("after backend 3 was removed the flow went to %d, want 4", got)
	}
}

// TestRetireBackend: a removed backend's counters move to its VIP's
// retired counters once, and a fresh VIP ID starts from zero.
func TestRetireBackend(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	be := backendOf(t, d, syn)
	sent := Counters{Packets: 1, Bytes: uint64(len(syn.Bytes()))}
	if c, err := d.BackendCounters(be); err != nil || c != sent {
		t.Fatalf("backend %d counters %+v %v, want %+v", be, c, err, sent)
	}
	for range 2 { // the second call finds nothing more to move
		must(t, d.RetireBackend(1, be))
		if c, err := d.RetiredCounters(1); err != nil || c != sent {
			t.Errorf("retired counters of vip 1: %+v %v, want %+v", c, err, sent)
		}
		if c, err := d.BackendCounters(be); err != nil || c != (Counters{}) {
			t.Errorf("backend %d counters after retiring: %+v %v, want zero", be, c, err)
		}
	}
	for name, err := range map[string]error{
		"vip id":     d.RetireBackend(MaxVIPs, be),
		"backend id": d.RetireBackend(1, MaxBackends),
		"read vip":   func() error { _, err := d.RetiredCounters(MaxVIPs); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s out of range: %v, want ErrInvalid", name, err)
		}
	}
	// VIP ID 1 used again by a new VIP: its retired counters start at zero.
	must(t, d.RemoveVIP(VIPKey{vip4, 80, 6}))
	must(t, d.PutVIP(VIPKey{vip4, 8080, 6}, VIP{ID: 1, TableSize: tableSize}))
	if c, err := d.RetiredCounters(1); err != nil || c != (Counters{}) {
		t.Errorf("retired counters of the reused vip id 1: %+v %v, want zero", c, err)
	}
}

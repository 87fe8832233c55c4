package loader

import (
	"errors"
	"testing"
)

// statelessVIP is the test VIP with Stateless set (testVIPs, ID 8).
var statelessVIP = VIPKey{vip4, 5353, 17}

// flowTableLen counts the flow table's entries.
func flowTableLen(t *testing.T, d *Datapath) int {
	t.Helper()
	var k lbFlowKey
	var f lbFlow
	n := 0
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &f) {
		n++
	}
	must(t, it.Err())
	return n
}

// TestStatelessVIP: a stateless VIP's datagrams go where the table says and
// record nothing, neither in the flow table nor in the flow cache, so the
// same 5-tuple follows a table change (a stateful VIP's flow would stay);
// an ICMP "too big" about such a datagram follows the table too.
func TestStatelessVIP(t *testing.T) {
	d := newTestDatapath(t)
	q := udpTo(vip4, client4, statelessVIP.Port)
	must(t, d.SetTable(8, tableFor(flowOf(q), 3, 1)))
	before := flowTableLen(t, d)
	for i := range 3 {
		if got := backendOf(t, d, q); got != 3 {
			t.Fatalf("datagram %d went to %d, want 3", i, got)
		}
	}
	if n := flowTableLen(t, d); n != before {
		t.Errorf("flow table holds %d entries after datagrams of a stateless VIP, want %d", n, before)
	}
	if s := cacheSlotOf(t, d, q); s.Key == flowKeyOf(q) {
		t.Errorf("a stateless VIP's datagram was cached: flags %#x backend %d", s.Flags, s.BackendId)
	}
	must(t, d.SetTable(8, tableFor(flowOf(q), 4, 1)))
	if got := backendOf(t, d, q); got != 4 {
		t.Errorf("after a table change the datagram went to %d, want the new slot's 4", got)
	}
	if got := backendOf(t, d, ptb4(q)); got != 4 {
		t.Errorf("ICMP too big about the datagram went to %d, want 4", got)
	}
	// A new 5-tuple each time (a DNS client's ports): still nothing recorded.
	pkt := q.Bytes()
	for i := range 1000 {
		setClient(pkt, i)
		if act, _, err := d.Program().Run(pkt); err != nil || act != ActionTX {
			t.Fatalf("datagram from port %d: %s, %v; want XDP_TX", 1024+i, act, err)
		}
	}
	if n := flowTableLen(t, d); n != before {
		t.Errorf("flow table holds %d entries after 1,000 new 5-tuples of a stateless VIP, want %d", n, before)
	}
}

// TestStatelessVIPValidation: only UDP VIPs can be stateless, and the flag
// reads back.
func TestStatelessVIPValidation(t *testing.T) {
	d := newTestDatapath(t)
	err := d.PutVIP(VIPKey{vip4, 8080, 6}, VIP{ID: 9, Stateless: true, TableSize: tableSize})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("stateless TCP VIP: %v, want ErrInvalid", err)
	}
	vips, err := d.VIPs()
	must(t, err)
	if _, ok := vips[VIPKey{vip4, 8080, 6}]; ok {
		t.Error("the refused VIP was written")
	}
	if !vips[statelessVIP].Stateless || vips[VIPKey{vip4, 53, 17}].Stateless {
		t.Errorf("read back: stateless VIP %+v, stateful VIP %+v", vips[statelessVIP], vips[VIPKey{vip4, 53, 17}])
	}
}

// TestVIPTurnsStateless: a VIP turning stateless drops its flows, from the
// flow table and the flow cache (read before the VIP), so its next datagram
// follows the table.
func TestVIPTurnsStateless(t *testing.T) {
	d := newTestDatapath(t)
	k := VIPKey{vip4, 53, 17}
	q := udpTo(vip4, client4, 53)
	must(t, d.SetTable(2, tableFor(flowOf(q), 3, 1)))
	if got := backendOf(t, d, q); got != 3 {
		t.Fatalf("datagram went to %d, want 3", got)
	}
	if got := backendOf(t, d, q); got != 3 { // from the cache
		t.Fatalf("second datagram went to %d, want 3", got)
	}
	must(t, d.SetTable(2, tableFor(flowOf(q), 4, 1)))
	if got := backendOf(t, d, q); got != 3 {
		t.Fatalf("stateful flow went to %d after a table change, want 3 (kept)", got)
	}
	must(t, d.PutVIP(k, VIP{ID: 2, Stateless: true, TableSize: tableSize}))
	if _, ok := inFlowTable(t, d, q); ok {
		t.Error("the flow is still in the flow table after the VIP turned stateless")
	}
	if got := backendOf(t, d, q); got != 4 {
		t.Errorf("after the VIP turned stateless the datagram went to %d, want the table's 4", got)
	}
}

// TestStatelessFlag: the config's stateless flag, which makes xdp_lb look a
// UDP datagram's VIP up before the flow table, is set while some VIP is
// stateless and only then, and SetConfig keeps it.
func TestStatelessFlag(t *testing.T) {
	d := newTestDatapath(t) // VIP 8 is stateless
	flag := func() bool {
		var c lbConfig
		must(t, d.objs.Settings.Lookup(uint32(0), &c))
		return c.Flags&configStateless != 0
	}
	if !flag() {
		t.Fatal("flag clear with a stateless VIP")
	}
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, MTU: 1500}))
	if !flag() {
		t.Error("SetConfig cleared the flag")
	}
	must(t, d.PutVIP(statelessVIP, VIP{ID: 8, TableSize: tableSize}))
	if flag() {
		t.Error("flag set after the only stateless VIP turned stateful")
	}
	must(t, d.PutVIP(statelessVIP, VIP{ID: 8, Stateless: true, TableSize: tableSize}))
	if !flag() {
		t.Error("flag clear after a VIP turned stateless")
	}
	must(t, d.RemoveVIP(statelessVIP))
	if flag() {
		t.Error("flag set after the only stateless VIP was removed")
	}
}

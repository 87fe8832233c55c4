package loader

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xlb-project/xlb/internal/testutil"
)

// A TCP SYN records its choice in the flow cache only, marked pending; the
// flow's next packet puts it into the flow table (bpf/flowcache.h).

// inFlowTable reports whether p's flow has a flow table entry, and its
// backend.
func inFlowTable(t *testing.T, d *Datapath, p testutil.Packet) (uint32, bool) {
	t.Helper()
	k := flowKeyOf(p)
	var f lbFlow
	err := d.objs.Flows.Lookup(&k, &f)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false
	}
	must(t, err)
	return f.BackendId, true
}

// cacheSlotOf reads the flow cache slot of p's flow.
func cacheSlotOf(t *testing.T, d *Datapath, p testutil.Packet) lbFlowCacheSlot {
	t.Helper()
	var s lbFlowCacheSlot
	must(t, d.objs.FlowCache.Lookup(cacheSlot(flowKeyOf(p)), &s))
	return s
}

// TestSYNPending: a SYN leaves no flow table entry and a pending slot; an
// ICMP "too big" about the flow follows the SYN's choice without recording
// it; the ACK inserts the entry with the SYN's backend and clears the mark,
// and the flow then keeps its backend across a table change.
func TestSYNPending(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	must(t, d.SetTable(1, tableFor(flowOf(syn), 2, 1)))
	if got := backendOf(t, d, syn); got != 2 {
		t.Fatalf("syn went to %d, want 2", got)
	}
	if id, ok := inFlowTable(t, d, syn); ok {
		t.Fatalf("the SYN inserted a flow table entry (backend %d)", id)
	}
	if s := cacheSlotOf(t, d, syn); s.Key != flowKeyOf(syn) || s.Flags&slotFlagPending == 0 || s.BackendId != 2 {
		t.Fatalf("slot after the SYN: key %v flags %#x backend %d, want the flow pending on 2", s.Key, s.Flags, s.BackendId)
	}
	if got := backendOf(t, d, ptb4(ack)); got != 2 {
		t.Errorf("ICMP too big for the pending flow went to %d, want 2", got)
	}
	if _, ok := inFlowTable(t, d, syn); ok {
		t.Error("an ICMP error inserted the flow")
	}
	if got := backendOf(t, d, ack); got != 2 {
		t.Fatalf("ack went to %d, want 2", got)
	}
	if id, ok := inFlowTable(t, d, syn); !ok || id != 2 {
		t.Errorf("flow table after the ACK: backend %d, present %v; want 2", id, ok)
	}
	if s := cacheSlotOf(t, d, syn); s.Flags&slotFlagPending != 0 {
		t.Errorf("the slot is still pending after the ACK: flags %#x", s.Flags)
	}
	// Out of the cache (a colliding flow took the slot), the flow table
	// keeps the flow on its backend.
	must(t, d.uncache(flowKeyOf(syn)))
	must(t, d.SetTable(1, roundRobin(tableSize, 3)))
	if got := backendOf(t, d, ack); got != 2 {
		t.Errorf("established flow went to %d after a table change, want 2", got)
	}
}

// TestSYNPendingAcrossBackendChange: a backend write between SYN and ACK
// retires the slot's generation; the ACK still finds the SYN's choice and
// keeps a backend that is now draining (usable for established flows only),
// as a flow table entry would, but leaves one that is gone.
func TestSYNPendingAcrossBackendChange(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend Backend
		want    uint32
	}{
		{"draining", Backend{UsableEstablished: true}, 2},
		{"unusable", Backend{}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDatapath(t)
			syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
			ack := syn
			ack.TCPFlags = testutil.TCPAck
			must(t, d.SetTable(1, tableFor(flowOf(syn), 2, 1)))
			if got := backendOf(t, d, syn); got != 2 {
				t.Fatalf("syn went to %d, want 2", got)
			}
			be := testBackend(2)
			be.UsableNew, be.UsableEstablished = tc.backend.UsableNew, tc.backend.UsableEstablished
			must(t, d.PutBackend(2, be))
			must(t, d.SetTable(1, roundRobin(tableSize, 3)))
			if got := backendOf(t, d, ack); got != tc.want {
				t.Fatalf("ack went to %d, want %d", got, tc.want)
			}
			if id, ok := inFlowTable(t, d, ack); !ok || id != tc.want {
				t.Errorf("flow table after the ACK: backend %d, present %v; want %d", id, ok, tc.want)
			}
			if got := backendOf(t, d, ack); got != tc.want {
				t.Errorf("next packet went to %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSYNFloodKeepsEstablished: a flood of distinct SYNs (spoofed sources
// that never complete the handshake), twice as many as the flow table
// holds, evicts no established flow from the flow table: the flow stays
// there and keeps its backend after a table change. A SYN that inserted
// into the flow table would push the flow out, and its next packet would
// select the new table's backend.
func TestSYNFloodKeepsEstablished(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	must(t, d.SetTable(1, tableFor(flowOf(syn), 2, 1)))
	if got := connect(t, d, syn); got != 2 {
		t.Fatalf("flow went to %d, want 2", got)
	}
	flood := tcpTo(vip4, client4.Next(), 80, testutil.TCPSyn).Bytes()
	n := 2 * int(d.objs.Flows.MaxEntries())
	for i := range n {
		setClient(flood, i)
		if act, _, err := d.Program().Run(flood); err != nil || act != ActionTX {
			t.Fatalf("flood SYN %d: %s, %v; want XDP_TX", i, act, err)
		}
	}
	if id, ok := inFlowTable(t, d, syn); !ok || id != 2 {
		t.Errorf("after %d SYNs the established flow's entry: backend %d, present %v; want 2", n, id, ok)
	}
	must(t, d.SetTable(1, roundRobin(tableSize, 3)))
	if got := backendOf(t, d, ack); got != 2 {
		t.Errorf("after %d SYNs the established flow went to %d, want 2", n, got)
	}
}

// TestSYNPendingVIPRemoved: removing a VIP clears its flows' pending SYN
// choices too, which are in no flow table: the ACK is not forwarded to the
// removed VIP's backend.
func TestSYNPendingVIPRemoved(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	if act, _, err := d.Program().Run(syn.Bytes()); err != nil || act != ActionTX {
		t.Fatalf("syn: %s, %v; want XDP_TX", act, err)
	}
	// vip4 keeps its UDP VIP, so the VIP filter still lets the ACK in.
	must(t, d.RemoveVIP(VIPKey{vip4, 80, 6}))
	if s := cacheSlotOf(t, d, syn); s.Key == flowKeyOf(syn) {
		t.Errorf("the removed VIP's pending slot is still there: flags %#x", s.Flags)
	}
	if act, _, err := d.Program().Run(ack.Bytes()); err != nil || act != ActionPass {
		t.Errorf("ack after the VIP's removal: %s, %v; want XDP_PASS", act, err)
	}
}

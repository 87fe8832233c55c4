package loader

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
)

// katranForTests loads Katran's balancer from XLB_KATRAN_OBJ (see
// peer_katran.go for how it is built) with the test VIP's TCP port 80 and
// UDP port 53 over three backends, or skips when the variable is unset.
func katranForTests(tb testing.TB, flowTableSize uint32) *Katran {
	tb.Helper()
	obj := os.Getenv("XLB_KATRAN_OBJ")
	if obj == "" {
		tb.Skip("XLB_KATRAN_OBJ names no Katran balancer object")
	}
	testutil.RequirePrivileged(tb)
	k, err := LoadKatran(KatranOptions{
		Object:        obj,
		VIPs:          []KatranVIP{{Addr: vip4, Port: 80, Proto: unix.IPPROTO_TCP}, {Addr: vip4, Port: 53, Proto: unix.IPPROTO_UDP}},
		Backends:      katranBackends,
		GatewayMAC:    katranGateway,
		FlowTableSize: flowTableSize,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { k.Close() })
	return k
}

var (
	katranGateway  = net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	katranBackends = []netip.Addr{netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("198.51.100.12"), netip.MustParseAddr("198.51.100.13")}
)

// TestKatranForwards checks that Katran, loaded and filled by LoadKatran,
// forwards a SYN, the flow's next packet and a UDP datagram to the VIP in
// IPIP to one of the backends through the gateway MAC, and the same
// backend for the flow's packets.
func TestKatranForwards(t *testing.T) {
	k := katranForTests(t, 1<<10)
	backends := map[netip.Addr]bool{}
	for _, b := range katranBackends {
		backends[b] = true
	}
	var first netip.Addr
	for i, pkt := range []testutil.Packet{tcpTo(vip4, client4, 80, testutil.TCPSyn), tcpTo(vip4, client4, 80, testutil.TCPAck), udpTo(vip4, client4, 53)} {
		in := pkt.Bytes()
		act, out, err := k.Program().Run(in)
		if err != nil {
			t.Fatal(err)
		}
		if act != ActionTX {
			t.Fatalf("packet %d: verdict %v, want XDP_TX", i, act)
		}
		if !bytes.Equal(out[:6], katranGateway) {
			t.Errorf("packet %d: destination MAC %v, want the gateway's %v", i, net.HardwareAddr(out[:6]), katranGateway)
		}
		if out[14+9] != unix.IPPROTO_IPIP || !bytes.Equal(out[34:], in[14:]) {
			t.Fatalf("packet %d: not the client's packet in IPIP: % x", i, out)
		}
		dst := netip.AddrFrom4([4]byte(out[14+16 : 14+20]))
		if !backends[dst] {
			t.Errorf("packet %d: sent to %s, not a backend", i, dst)
		}
		if i == 0 {
			first = dst
		} else if i == 1 && dst != first {
			t.Errorf("the flow's second packet went to %s, its SYN to %s", dst, first)
		}
	}
	// Both flows are in a per-CPU flow table, none went to Katran's fallback
	// table (what it uses when lru_mapping has no table for the CPU).
	flows, err := k.Flows()
	must(t, err)
	if flows != 2 {
		t.Errorf("%d flows in the per-CPU flow tables, want 2", flows)
	}
	var per []struct{ V1, V2 uint64 }
	must(t, k.coll.Maps["stats"].Lookup(uint32(512+3), &per)) // MAX_VIPS + FALLBACK_LRU_CNTR
	for cpu, c := range per {
		if c.V1 != 0 {
			t.Errorf("cpu %d: %d packets used the fallback flow table", cpu, c.V1)
		}
	}
}

// katranCost is Katran's paths in BenchmarkXDPCost.
type katranCost struct {
	k     *Katran
	calls int
	paths []*benchPath
}

// katranCostPaths are BenchmarkXDPCost's rows for Katran when
// XLB_KATRAN_OBJ names its object, else none: established, a SYN on a warm
// 5-tuple, a new TCP flow (SYN) and a new UDP flow per call, on the test
// VIP, with a flow table of xdp_lb's default size on each CPU. Clients
// other than xdp_lb's rows'.
func katranCostPaths(b *testing.B, calls int) katranCost {
	if os.Getenv("XLB_KATRAN_OBJ") == "" {
		return katranCost{}
	}
	k := katranForTests(b, DefaultFlowTableSize)
	client := netip.MustParseAddr("198.51.100.101")
	est := tcpTo(vip4, client, 80, testutil.TCPAck)
	syn := tcpTo(vip4, client.Next(), 80, testutil.TCPSyn)
	newTCP := tcpTo(vip4, client.Next().Next(), 80, testutil.TCPSyn)
	newUDP := udpTo(vip4, client.Next().Next().Next(), 53)
	p := k.Program()
	return katranCost{k: k, calls: calls, paths: []*benchPath{
		{name: "katran established TCP", prog: p, pkt: est.Bytes(), want: ActionTX},
		{name: "katran SYN (warm 5-tuple)", prog: p, pkt: syn.Bytes(), want: ActionTX},
		{name: "katran new TCP flow/call", prog: p, pkt: newTCP.Bytes(), want: ActionTX, vary: setClient},
		{name: "katran new UDP flow/call", prog: p, pkt: newUDP.Bytes(), want: ActionTX, vary: setClient},
	}}
}

// report says how many of the new flows Katran inserted: it skips the
// insert above MAX_CONN_RATE new flows a second on a CPU (its flood
// guard), which would make its new-flow rows cheaper.
func (c katranCost) report(b *testing.B) {
	if c.k == nil {
		return
	}
	n, err := c.k.Flows()
	must(b, err)
	// The established and warm-SYN flows, and each call's new TCP and UDP
	// flow.
	fmt.Printf("katran: %d flows in its flow tables for %d distinct flows sent\n", n, 2+2*c.calls)
}

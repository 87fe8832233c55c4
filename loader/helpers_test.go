package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

// The lab's addresses (DESIGN.md, Lab).
var (
	balancerMAC = net.HardwareAddr{0x02, 0xb0, 0, 0, 0, 0x01}
	outer4      = netip.MustParsePrefix("192.0.2.0/24")
	outer6      = netip.MustParsePrefix("2001:db8:e::/64")
	client4     = netip.MustParseAddr("198.51.100.1")
	client6     = netip.MustParseAddr("2001:db8:1::1")
	vip4        = netip.MustParseAddr("203.0.113.10")
	vip4Any     = netip.MustParseAddr("203.0.113.11") // port wildcard
	vip4DSR     = netip.MustParseAddr("203.0.113.12")
	vip4Src     = netip.MustParseAddr("203.0.113.13") // source-IP hashing
	vip4Empty   = netip.MustParseAddr("203.0.113.14") // no table
	vip4Mixed   = netip.MustParseAddr("203.0.113.15") // table names a v6 backend
	vip6        = netip.MustParseAddr("2001:db8:f::10")
	vip6DSR     = netip.MustParseAddr("2001:db8:f::12")
	router4     = netip.MustParseAddr("198.51.100.254")
	router6     = netip.MustParseAddr("2001:db8:1::fe")
)

const tableSize = 251

type testVIP struct {
	key VIPKey
	vip VIP
}

var testVIPs = []testVIP{
	{VIPKey{vip4, 80, 6}, VIP{ID: 1, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip4, 53, 17}, VIP{ID: 2, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip4Any, 0, 6}, VIP{ID: 3, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip4DSR, 53, 17}, VIP{ID: 4, Mode: ModeL2DSR, TableSize: tableSize}},
	{VIPKey{vip4Src, 80, 6}, VIP{ID: 5, Mode: ModeIPIP, HashSrcIPOnly: true, TableSize: tableSize}},
	{VIPKey{vip4Empty, 80, 6}, VIP{ID: 6, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip4Mixed, 80, 6}, VIP{ID: 7, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip4, 5353, 17}, VIP{ID: 8, Mode: ModeIPIP, Stateless: true, TableSize: tableSize}},
	{VIPKey{vip6, 80, 6}, VIP{ID: 10, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip6, 53, 17}, VIP{ID: 11, Mode: ModeIPIP, TableSize: tableSize}},
	{VIPKey{vip6DSR, 53, 17}, VIP{ID: 12, Mode: ModeL2DSR, TableSize: tableSize}},
}

func backendMAC(id uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xbe, 0, 0, byte(id >> 8), byte(id)}
}

// Backends 1-4 are IPv4, 11-14 IPv6.
func testBackend(id uint32) Backend {
	a := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + id)})
	if id > 10 {
		a = netip.MustParseAddr("2001:db8:1::100").Next()
		for range id {
			a = a.Next()
		}
	}
	return Backend{Addr: a, MAC: backendMAC(id), UsableNew: true, UsableEstablished: true}
}

// roundRobin fills a table with ids in turn.
func roundRobin(size int, ids ...uint32) []uint32 {
	t := make([]uint32, size)
	for i := range t {
		t[i] = ids[i%len(ids)]
	}
	return t
}

// newTestDatapath loads xdp_lb (no pins) with the lab configuration, the
// test VIPs and backends.
func newTestDatapath(t testing.TB) *Datapath {
	t.Helper()
	testutil.RequirePrivileged(t)
	d, err := Load(Options{FlowTableSize: flowTableSizeForTests, PerCPULRU: perCPULRUForTests, Verbose: true})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6, MTU: 1500}))
	for _, id := range []uint32{1, 2, 3, 4, 11, 12, 13, 14} {
		must(t, d.PutBackend(id, testBackend(id)))
	}
	for _, v := range testVIPs {
		must(t, d.PutVIP(v.key, v.vip))
	}
	v4 := roundRobin(tableSize, 1, 2, 3, 4)
	v6 := roundRobin(tableSize, 11, 12, 13, 14)
	for _, id := range []uint32{1, 2, 3, 4, 5, 8} {
		must(t, d.SetTable(id, v4))
	}
	must(t, d.SetTable(7, roundRobin(tableSize, 11)))
	for _, id := range []uint32{10, 11, 12} {
		must(t, d.SetTable(id, v6))
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// expectedBackend is where a new flow goes with the round-robin tables.
func expectedBackend(table []uint32, f Flow, srcOnly bool) uint32 {
	return table[FlowHash(f, DefaultHashSeed, srcOnly)%uint32(len(table))]
}

// outerSource computes the outer source address independently: the
// prefix with its host bits taken from the flow hash's little-endian bytes.
func outerSource(p netip.Prefix, hash uint32) netip.Addr {
	var h [4]byte
	binary.LittleEndian.PutUint32(h[:], hash)
	a := p.Masked().Addr().AsSlice()
	n := len(a)
	for i := range 4 {
		bit := (n - 4 + i) * 8 // first bit of this byte
		var hostMask byte
		for b := range 8 {
			if bit+b >= p.Bits() {
				hostMask |= 0x80 >> b
			}
		}
		a[n-4+i] |= h[i] & hostMask
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// encapsulated is the frame xdp_lb should send for pkt to backend id in
// IPIP mode.
func encapsulated(pkt testutil.Packet, id uint32, hash uint32) []byte {
	be := testBackend(id)
	eth := testutil.Packet{DstMAC: be.MAC, SrcMAC: balancerMAC, VLAN: pkt.VLAN, Src: pkt.Src}.EthHeader()
	inner := pkt.L3()
	var outer []byte
	if pkt.Src.Is4() {
		var frag uint16
		if pkt.DF {
			frag = 0x4000
		}
		outer = testutil.IPv4Header(outerSource(outer4, hash), be.Addr, testutil.ProtoIPIP, pkt.TOS, 0, frag, 64, nil, len(inner))
	} else {
		outer = testutil.IPv6Header(outerSource(outer6, hash), be.Addr, testutil.ProtoIPv6, pkt.TOS, hash&0xfffff, 64, len(inner))
	}
	return append(append(eth, outer...), inner...)
}

// rewritten is the frame xdp_lb should send for pkt in L2 DSR mode.
func rewritten(pkt testutil.Packet, id uint32) []byte {
	pkt.DstMAC, pkt.SrcMAC = backendMAC(id), balancerMAC
	return pkt.Bytes()
}

func flowOf(p testutil.Packet) Flow {
	return Flow{Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort, Proto: p.Proto}
}

// flowKeyOf is the flows map key of p's flow.
func flowKeyOf(p testutil.Packet) lbFlowKey {
	return lbFlowKey{Src: addr16(p.Src), Dst: addr16(p.Dst), Sport: be16(p.SrcPort), Dport: be16(p.DstPort), Proto: p.Proto, Family: familyOf(p.Src)}
}

func diffBytes(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("output differs\n got: %s\nwant: %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
}

// snapshot is every counter, to compare before and after a run.
type snapshot struct {
	exits    map[string]uint64
	backends map[uint32]Counters
}

func takeSnapshot(t testing.TB, d *Datapath) snapshot {
	t.Helper()
	s := snapshot{backends: map[uint32]Counters{}}
	var err error
	if s.exits, err = d.Drops(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{0, 1, 2, 3, 4, 11, 12, 13, 14} {
		c, err := d.BackendCounters(id)
		must(t, err)
		s.backends[id] = c
	}
	return s
}

// delta lists what changed between two snapshots as readable strings.
func (s snapshot) delta(after snapshot) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after.exits {
		if n := v - s.exits[k]; n != 0 {
			out["exit "+k] = n
		}
	}
	for id, c := range after.backends {
		if n := c.Packets - s.backends[id].Packets; n != 0 {
			out["backend "+itoa(id)+" packets"] = n
			out["backend "+itoa(id)+" bytes"] = c.Bytes - s.backends[id].Bytes
		}
	}
	return out
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

var flowTableSizeForTests uint32 = 1 << 16

var perCPULRUForTests = os.Getenv("XLB_PERCPU_LRU") == "1"

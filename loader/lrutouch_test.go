package loader

import (
	"errors"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestCachedFlowKeepsLRUEntry: a busy flow served from the flow cache
// looks its flow table entry up now and then, which marks it referenced,
// so that when new flows push the LRU table beyond its size the busy flow
// stays and idle ones go. Without the touch the LRU never sees the busy
// flow used after its first packet and evicts it like an idle one. The
// thread runs on one CPU: the kernel's LRU lists are then deterministic.
func TestCachedFlowKeepsLRUEntry(t *testing.T) {
	testutil.RequirePrivileged(t)
	const size = 4096
	d, err := Load(Options{FlowTableSize: size, Verbose: true})
	must(t, err)
	t.Cleanup(func() { d.Close() })
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4}))
	must(t, d.PutBackend(1, testBackend(1)))
	must(t, d.PutVIP(VIPKey{vip4, 80, 6}, VIP{ID: 1, TableSize: tableSize}))
	must(t, d.SetTable(1, roundRobin(tableSize, 1)))

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	must(t, unix.SchedGetaffinity(0, &old))
	one.Set(runtime.NumCPU() - 1)
	must(t, unix.SchedSetaffinity(0, &one))
	defer unix.SchedSetaffinity(0, &old)

	run := func(p testutil.Packet) {
		t.Helper()
		act, _, err := d.Program().Run(p.Bytes())
		must(t, err)
		if act != ActionTX {
			t.Fatalf("verdict %s, want XDP_TX", act)
		}
	}
	inTable := func(p testutil.Packet) bool {
		var f lbFlow
		err := d.objs.Flows.Lookup(flowKeyOf(p), &f)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}

	busy := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	idle := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	idle.SrcPort++
	run(busy)
	run(idle)
	busy.TCPFlags = testutil.TCPAck
	busySlot := cacheSlot(flowKeyOf(busy))
	// Flows whose cache slot is the busy flow's would make its next packet
	// miss the cache and look the flow table up anyway: left out.
	added := 0
	for i := 0; added < 8*size; i++ {
		p := tcpTo(vip4, netip.AddrFrom4([4]byte{198, 18, byte(i >> 16), byte(i >> 8)}), 80, testutil.TCPSyn)
		p.SrcPort = uint16(1024 + i%256)
		if cacheSlot(flowKeyOf(p)) == busySlot {
			continue
		}
		run(p)
		run(busy)
		added++
	}
	if inTable(idle) {
		t.Fatalf("the idle flow is still in the flow table after %d new flows in a table of %d: no eviction pressure", added, size)
	}
	if !inTable(busy) {
		t.Errorf("the busy flow was evicted from the flow table: its cache hits never touched its LRU entry")
	}
}

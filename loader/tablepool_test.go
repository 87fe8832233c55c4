package loader

import (
	"runtime"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xlb-project/xlb/internal/testutil"
)

// installedID is the ID of the inner map holding a VIP's table.
func installedID(t *testing.T, d *Datapath, vipID uint32) ebpf.MapID {
	t.Helper()
	var id ebpf.MapID
	must(t, d.tables[tableSize].Lookup(vipID, &id))
	return id
}

// A replaced table map is reused for a later install, after the grace
// period, and every install reads back exactly the table written.
func TestSetTableReusesReplacedMaps(t *testing.T) {
	d := newTestDatapath(t)
	if runtime.NumCPU() < 2 {
		t.Skip("table maps are reused only with more than one CPU")
	}
	seen := map[ebpf.MapID]bool{installedID(t, d, 1): true}
	reused := false
	for i := range 2 * reuseBatch {
		table := roundRobin(tableSize, uint32(1+i%4), uint32(1+(i+1)%4))
		must(t, d.SetTable(1, table))
		id := installedID(t, d, 1)
		reused = reused || seen[id]
		seen[id] = true
		got, err := d.Table(1)
		must(t, err)
		if !slices.Equal(got, table) {
			t.Fatalf("install %d: table read back differs from the one written", i)
		}
	}
	if !reused {
		t.Fatalf("%d installs used %d distinct inner maps, none reused", 2*reuseBatch, len(seen))
	}
	// Packets follow the last table written into a reused map.
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	f := flowOf(syn)
	must(t, d.SetTable(1, tableFor(f, 4, 2)))
	if got := backendOf(t, d, syn); got != 4 {
		t.Fatalf("syn went to backend %d, want 4", got)
	}
}

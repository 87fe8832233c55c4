package loader

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xlb-project/xlb/internal/testutil"
)

// slotOf is the table slot a flow's new packets read.
func slotOf(p testutil.Packet) uint32 {
	return FlowHash(flowOf(p), DefaultHashSeed, false) % tableSize
}

// otherThan returns a test backend ID (1-4) other than id.
func otherThan(id uint32) uint32 { return id%4 + 1 }

// PatchTable rewrites exactly the slots given, the datapath reads the new
// value at once, and a table that SetTable replaced is patched, not the one
// it replaced.
func TestPatchTable(t *testing.T) {
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	s := slotOf(syn)
	want := roundRobin(tableSize, 1, 2, 3, 4)
	if got := backendOf(t, d, syn); got != want[s] {
		t.Fatalf("syn went to backend %d before the patch, want %d", got, want[s])
	}
	want[s] = otherThan(want[s])
	want[0] = 0 // an empty slot
	must(t, d.PatchTable(1, tableSize, []uint32{s, 0}, []uint32{want[s], 0}))
	got, err := d.Table(1)
	must(t, err)
	if !slices.Equal(got, want) {
		t.Fatal("table read back differs from the patched one")
	}
	if got := backendOf(t, d, syn); got != want[s] {
		t.Fatalf("syn went to backend %d after the patch, want %d", got, want[s])
	}

	// A new table replaces the mapped one; patches go to the new one.
	next := roundRobin(tableSize, 4, 3)
	must(t, d.SetTable(1, next))
	next[s] = otherThan(next[s])
	must(t, d.PatchTable(1, tableSize, []uint32{s}, []uint32{next[s]}))
	got, err = d.Table(1)
	must(t, err)
	if !slices.Equal(got, next) {
		t.Fatal("patch after SetTable: table read back differs")
	}
	if got := backendOf(t, d, syn); got != next[s] {
		t.Fatalf("syn went to backend %d, want %d", got, next[s])
	}
}

// Bad arguments are refused before anything is written; a VIP without a
// table of that size cannot be patched.
func TestPatchTableRefuses(t *testing.T) {
	d := newTestDatapath(t)
	before, err := d.Table(1)
	must(t, err)
	for _, tc := range []struct {
		name       string
		vip, size  uint32
		slots, ids []uint32
		want       error
	}{
		{"slot beyond the table", 1, tableSize, []uint32{0, tableSize}, []uint32{2, 2}, ErrInvalid},
		{"backend ID beyond the maps", 1, tableSize, []uint32{0, 1}, []uint32{2, MaxBackends}, ErrInvalid},
		{"more slots than IDs", 1, tableSize, []uint32{0, 1}, []uint32{2}, ErrInvalid},
		{"unsupported size", 1, 250, []uint32{0}, []uint32{2}, ErrInvalid},
		{"VIP ID beyond the maps", MaxVIPs, tableSize, []uint32{0}, []uint32{2}, ErrInvalid},
		{"no table installed", 9, tableSize, []uint32{0}, []uint32{2}, ErrNoPatch},
		{"table of another size", 1, 4093, []uint32{0}, []uint32{2}, ErrNoPatch},
	} {
		err := d.PatchTable(tc.vip, tc.size, tc.slots, tc.ids)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	after, err := d.Table(1)
	must(t, err)
	if !slices.Equal(before, after) {
		t.Fatal("a refused patch changed the table")
	}
}

// A restarted daemon patches the tables it adopts from the pins.
func TestPatchAdoptedTable(t *testing.T) {
	dir := pinDir(t)
	_, _ = pinFlow(t, dir, 2)
	d, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	defer d.Close()
	table, err := d.Table(1)
	must(t, err)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	syn.SrcPort += 7 // a new flow
	s := slotOf(syn)
	table[s] = 3 - table[s] // backends 1 and 2 only
	must(t, d.PatchTable(1, tableSize, []uint32{s}, []uint32{table[s]}))
	got, err := d.Table(1)
	must(t, err)
	if !slices.Equal(got, table) {
		t.Fatal("adopted table read back differs from the patched one")
	}
	if b := backendOf(t, d, syn); b != table[s] {
		t.Fatalf("new flow went to backend %d, want %d", b, table[s])
	}
}

// Pins of an earlier build hold the tables in hashes of maps, with inner
// maps that may not be mmapable: Load moves them into this build's arrays
// of maps (the kernel would refuse the old pins), after which the adopted
// tables forward, read back and take patches like new ones.
func TestTablesFromEarlierPins(t *testing.T) {
	dir := pinDir(t)
	_, ack := pinFlow(t, dir, 2) // a 251-slot table for VIP 1
	d, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	want, err := d.Table(1)
	must(t, err)
	must(t, d.RemoveTable(1))
	must(t, d.Close())

	path := filepath.Join(dir, "tables_251")
	must(t, os.Remove(path))
	innerSpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4 * tableSize, MaxEntries: 1}
	outer, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: MaxVIPs, InnerMap: innerSpec})
	must(t, err)
	defer outer.Close()
	inner, err := ebpf.NewMap(innerSpec)
	must(t, err)
	must(t, inner.Put(uint32(0), want))
	must(t, outer.Put(uint32(1), inner))
	must(t, inner.Close())
	must(t, outer.Put(uint32(math.MaxUint32), innerSpecMap(t, innerSpec))) // an earlier build's probe entry
	must(t, outer.Pin(path))

	d, err = Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	defer d.Close()
	got, err := d.Table(1)
	must(t, err)
	if !slices.Equal(got, want) {
		t.Fatal("table read back after the move differs from the earlier build's")
	}
	if info, err := d.tables[tableSize].Info(); err != nil || info.Type != ebpf.ArrayOfMaps {
		t.Fatalf("tables_251 after Load: %v, %v; want an array of maps", info, err)
	}
	pinned, err := ebpf.LoadPinnedMap(path, nil)
	must(t, err)
	if pinned.Type() != ebpf.ArrayOfMaps {
		t.Errorf("pinned tables_251 is a %v, want an array of maps", pinned.Type())
	}
	pinned.Close()
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	syn.SrcPort += 7
	s := slotOf(syn)
	if b := backendOf(t, d, syn); b != want[s] {
		t.Fatalf("new flow went to backend %d, want %d from the moved table", b, want[s])
	}
	if b := backendOf(t, d, ack); b != 1 {
		t.Fatalf("established flow went to backend %d, want 1", b)
	}
	must(t, d.PatchTable(1, tableSize, []uint32{s}, []uint32{3 - want[s]}))
	if b := backendOf(t, d, syn); b != 3-want[s] {
		t.Fatalf("after a patch the new flow went to backend %d, want %d", b, 3-want[s])
	}
}

// innerSpecMap is a new empty map of spec, closed when the test ends.
func innerSpecMap(t *testing.T, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(spec)
	must(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// While slots are patched, a reader of the table sees each slot whole, with
// its old backend or its new one, never a torn or other value: what makes a
// table read mid-patch safe, given that both backends are in the backends
// map (the caller's ordering rule). The two IDs differ in both low bytes,
// so a store split in two would show.
func TestPatchTableReadMidPatch(t *testing.T) {
	d := newTestDatapath(t)
	const moved = 0x0f0e // replaces backend 1
	must(t, d.PutBackend(moved, testBackend(1)))
	start, err := d.Table(1)
	must(t, err)
	var slots, to, back []uint32
	for s, id := range start {
		if id == 1 {
			slots, to, back = append(slots, uint32(s)), append(to, moved), append(back, 1)
		}
	}
	done := make(chan struct{})
	reads := make(chan int)
	var bad error
	go func() {
		n := 0
		defer func() { reads <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := d.Table(1)
			if err != nil {
				bad = err
				return
			}
			n++
			for s, id := range got {
				if id != start[s] && !(start[s] == 1 && id == moved) {
					bad = fmt.Errorf("slot %d read %#x mid-patch, want %#x or %#x", s, id, start[s], moved)
					return
				}
			}
		}
	}()
	for i := range 2000 {
		ids := to
		if i%2 == 1 {
			ids = back
		}
		if err := d.PatchTable(1, tableSize, slots, ids); err != nil {
			close(done)
			<-reads
			t.Fatal(err)
		}
	}
	close(done)
	if n := <-reads; n == 0 && bad == nil {
		t.Fatal("no read while patching: the test tested nothing")
	}
	if bad != nil {
		t.Fatal(bad)
	}
}

// PatchTables patches many tables (reading the installed ones in one
// batch), and reports each patch's refusal on its own: the others are
// written.
func TestPatchTables(t *testing.T) {
	d := newTestDatapath(t)
	want := map[uint32][]uint32{}
	var ps []TablePatch
	for v := uint32(20); v < 20+2*batchLookupMin; v++ {
		table := roundRobin(tableSize, 1, 2, 3)
		must(t, d.SetTable(v, table))
		slots := []uint32{v % tableSize, (v * 7) % tableSize}
		ids := []uint32{4, 0}
		table[slots[0]], table[slots[1]] = 4, 0
		want[v] = table
		ps = append(ps, TablePatch{VIPID: v, Size: tableSize, Slots: slots, IDs: ids})
	}
	bad := []struct {
		p    TablePatch
		want error
	}{
		{TablePatch{VIPID: 9, Size: tableSize, Slots: []uint32{0}, IDs: []uint32{2}}, ErrNoPatch},
		{TablePatch{VIPID: 1, Size: tableSize, Slots: []uint32{tableSize}, IDs: []uint32{2}}, ErrInvalid},
		{TablePatch{VIPID: 20, Size: tableSize, Slots: []uint32{0}, IDs: []uint32{2}}, ErrInvalid}, // twice
		{TablePatch{VIPID: 2, Size: 4093, Slots: []uint32{0}, IDs: []uint32{2}}, ErrNoPatch},
	}
	for _, b := range bad {
		ps = append(ps, b.p)
	}
	before1, err := d.Table(1)
	must(t, err)
	errs := d.PatchTables(ps)
	for i, b := range bad {
		if err := errs[len(ps)-len(bad)+i]; !errors.Is(err, b.want) {
			t.Errorf("patch of vip %d: error %v, want %v", b.p.VIPID, err, b.want)
		}
	}
	for i, err := range errs[:len(ps)-len(bad)] {
		if err != nil {
			t.Fatalf("patch of vip %d: %v", ps[i].VIPID, err)
		}
	}
	for v, table := range want {
		got, err := d.Table(v)
		must(t, err)
		if !slices.Equal(got, table) {
			t.Fatalf("table of vip %d read back differs from the patched one", v)
		}
	}
	if after1, err := d.Table(1); err != nil || !slices.Equal(after1, before1) {
		t.Fatalf("a refused patch changed the table of vip 1 (%v)", err)
	}
}

package loader

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Table maps are created mmapable (BPF_F_MMAPABLE), so that PatchTable can
// rewrite single slots of an installed table in place: a change that moves
// 1% of the slots of 1,000 tables writes 1% of them instead of creating (or
// waiting for a grace period to reuse) 1,000 inner maps of 256 KiB. Each slot
// is one aligned 32-bit store, which a packet reads whole: it sees the slot's
// old backend or its new one, and both are in the backends map (the caller's
// ordering rule). Unlike SetTable, a packet arriving during a patch may see
// some slots already rewritten and others not yet; each packet reads one
// slot, so that only decides which of the two tables its new flow follows.

// tableMapFlags are the flags of inner table maps.
const tableMapFlags uint32 = unix.BPF_F_MMAPABLE

// ErrNoPatch: PatchTable cannot rewrite the VIP's table in place (none is
// installed, or it has another size); install the whole table with
// SetTable.
var ErrNoPatch = errors.New("table cannot be patched in place")

// tableView is a writable mapping of one installed inner table map.
type tableView struct {
	mapID ebpf.MapID
	mem   []byte   // the mapping, unmapped by unmap
	slots []uint32 // mem as the table's slots
}

// tableViews caches the mappings of installed tables by VIP ID. Calls for
// different VIP IDs run in parallel (as SetTable's), so the cache is locked;
// a view is used by the one call for its VIP ID at a time.
type tableViews struct {
	mu    sync.Mutex
	views map[uint32]*tableView
}

func (v *tableViews) take(vipID uint32) *tableView {
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.views[vipID]
	delete(v.views, vipID)
	return t
}

func (v *tableViews) keep(vipID uint32, t *tableView) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.views == nil {
		v.views = map[uint32]*tableView{}
	}
	v.views[vipID] = t
}

// newView maps an inner table map of this Datapath writable; an error
// when it is not mmapable (old pins).
func newView(m *ebpf.Map, size uint32) (*tableView, error) {
	if m.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return nil, ErrNoPatch
	}
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	id, ok := info.ID()
	if !ok {
		return nil, ErrNoPatch
	}
	return mapInner(m, id, size)
}

// drop unmaps the view of a VIP ID, if any: its table is being replaced or
// removed.
func (v *tableViews) drop(vipID uint32) {
	if t := v.take(vipID); t != nil {
		t.unmap()
	}
}

func (v *tableViews) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, t := range v.views {
		t.unmap()
		delete(v.views, id)
	}
}

func (t *tableView) unmap() { _ = unix.Munmap(t.mem) }

// PatchTable rewrites slots of the installed table of a VIP ID in place:
// table[slots[i]] = ids[i]. size is the VIP's TableSize, ids are backend IDs
// (0 empties a slot). Every argument is checked before the first write. It
// returns an error wrapping ErrNoPatch when the table cannot be patched;
// nothing was written then. Like SetTable, calls for different VIP IDs may
// run in parallel, calls for the same VIP ID must not.
func (d *Datapath) PatchTable(vipID, size uint32, slots, ids []uint32) error {
	return d.PatchTables([]TablePatch{{VIPID: vipID, Size: size, Slots: slots, IDs: ids}})[0]
}

// TablePatch is a change of one VIP's installed table for PatchTables:
// table[Slots[i]] = IDs[i] in the Size-slot table of VIP ID VIPID.
type TablePatch struct {
	VIPID, Size uint32
	Slots, IDs  []uint32
}

// batchLookupMin is how many patches make one batch lookup of the outer
// maps cheaper than a lookup per VIP: looking up one VIP's table in a hash
// of maps takes about 7 µs here, a batch of 1,000 about 0.5 ms.
const batchLookupMin = 16

// PatchTables applies patches to distinct VIP IDs, each as PatchTable
// would (errs[i] is that of ps[i], nil when it was written), spreading the
// writes over the CPUs. Which table each VIP has installed is read with one
// batch lookup per table size when there are many patches: a flip that
// moves slots of 1,000 tables does not pay 1,000 lookups.
func (d *Datapath) PatchTables(ps []TablePatch) []error {
	errs := make([]error, len(ps))
	if len(ps) == 0 {
		return errs
	}
	seen := make(map[uint32]bool, len(ps))
	sizes := map[uint32]bool{}
	for i, p := range ps {
		errs[i] = d.checkPatch(p)
		if errs[i] == nil && seen[p.VIPID] {
			errs[i] = fmt.Errorf("%w: vip id %d patched twice in one call", ErrInvalid, p.VIPID)
		}
		seen[p.VIPID] = true
		if errs[i] == nil {
			sizes[p.Size] = true
		}
	}
	// size → VIP ID → inner map; a size missing (the batch lookup failed,
	// e.g. a kernel without batch operations) is looked up per VIP.
	installed := map[uint32]map[uint32]ebpf.MapID{}
	if len(ps) >= batchLookupMin {
		for size := range sizes {
			if m, err := installedTables(d.tables[size]); err == nil {
				installed[size] = m
			}
		}
	}
	// The caller patches too, helped by a goroutine per other CPU. It
	// waits for the patches, not for the helpers: on a busy machine a
	// helper may get a CPU only after the caller has done all the work, and
	// then finds none left. Only a patch a helper has started (a few µs)
	// can hold the caller up.
	var next, finished atomic.Int64
	allDone := make(chan struct{})
	work := func() {
		for i := int(next.Add(1) - 1); i < len(ps); i = int(next.Add(1) - 1) {
			if errs[i] == nil {
				errs[i] = d.patchOne(ps[i], installed[ps[i].Size])
			}
			if finished.Add(1) == int64(len(ps)) {
				close(allDone)
			}
		}
	}
	for range min(runtime.GOMAXPROCS(0), (len(ps)+batchLookupMin-1)/batchLookupMin) - 1 {
		go work()
	}
	work()
	<-allDone
	return errs
}

// patchOne writes a checked patch into the VIP's installed table, found in
// installed (VIP ID → inner map) or, when that is nil, looked up.
func (d *Datapath) patchOne(p TablePatch, installed map[uint32]ebpf.MapID) error {
	var cur ebpf.MapID
	var ok bool
	if installed != nil {
		cur, ok = installed[p.VIPID]
	} else if err := d.tables[p.Size].Lookup(p.VIPID, &cur); err == nil {
		ok = true
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("patch table of vip %d: %w", p.VIPID, err)
	}
	if !ok {
		return fmt.Errorf("patch table of vip %d: no %d-slot table installed: %w", p.VIPID, p.Size, ErrNoPatch)
	}
	return d.patchInstalled(p, cur)
}

// checkPatch checks a patch's arguments.
func (d *Datapath) checkPatch(p TablePatch) error {
	if p.VIPID >= MaxVIPs {
		return fmt.Errorf("%w: vip id %d: want 0..%d", ErrInvalid, p.VIPID, MaxVIPs-1)
	}
	if _, ok := d.tables[p.Size]; !ok {
		return fmt.Errorf("%w: table size %d: want one of %v", ErrInvalid, p.Size, SupportedTableSizes)
	}
	if len(p.Slots) != len(p.IDs) {
		return fmt.Errorf("%w: %d slots but %d backend ids", ErrInvalid, len(p.Slots), len(p.IDs))
	}
	for i, s := range p.Slots {
		if s >= p.Size {
			return fmt.Errorf("%w: slot %d of a %d-slot table", ErrInvalid, s, p.Size)
		}
		if p.IDs[i] >= d.maxBackends {
			return fmt.Errorf("%w: table slot %d: backend id %d: want 0..%d", ErrInvalid, s, p.IDs[i], d.maxBackends-1)
		}
	}
	return nil
}

// installedTables reads an outer table map whole: VIP ID → inner map ID.
func installedTables(outer *ebpf.Map) (map[uint32]ebpf.MapID, error) {
	out := map[uint32]ebpf.MapID{}
	keys := make([]uint32, 256)
	ids := make([]uint32, 256)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := outer.BatchLookup(&cursor, keys, ids, nil)
		for i := range n {
			out[keys[i]] = ebpf.MapID(ids[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil // the last batch
		}
		if err != nil {
			return nil, fmt.Errorf("read installed tables: %w", err)
		}
	}
}

// patchInstalled writes a checked patch into the installed inner map cur.
func (d *Datapath) patchInstalled(p TablePatch, cur ebpf.MapID) error {
	t := d.views.take(p.VIPID)
	if t != nil && t.mapID != cur {
		t.unmap() // replaced behind this view's back (another Datapath on the same pins)
		t = nil
	}
	if t == nil {
		var err error
		if t, err = mapTable(cur, p.Size); err != nil {
			return fmt.Errorf("patch table of vip %d: %w", p.VIPID, err)
		}
	}
	// Plain stores: an aligned 32-bit store is never torn (hardware, and
	// the Go memory model for word-sized accesses), and without the full
	// barrier of an atomic store on amd64 the cache misses of a thousand
	// scattered slots overlap (about 5x faster here). The atomic store at
	// the end publishes them all before PatchTable returns, so a caller's
	// next step (freeing an ID the old slots named) comes after.
	for i, s := range p.Slots {
		t.slots[s] = p.IDs[i]
	}
	if n := len(p.Slots); n > 0 {
		atomic.StoreUint32(&t.slots[p.Slots[n-1]], p.IDs[n-1])
	}
	d.views.keep(p.VIPID, t)
	return nil
}

// mapTable maps the inner table map with the given ID writable.
func mapTable(id ebpf.MapID, size uint32) (*tableView, error) {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return nil, fmt.Errorf("open table map %d: %w", id, err)
	}
	defer m.Close() // the mapping holds its own reference
	return mapInner(m, id, size)
}

// mapInner maps an inner table map writable. The first write to each page
// of a new mapping faults (about 2 s for a thousand 65537-slot tables
// here), so SetTable fills new tables through it.
func mapInner(m *ebpf.Map, id ebpf.MapID, size uint32) (*tableView, error) {
	if m.Flags()&unix.BPF_F_MMAPABLE == 0 || m.ValueSize() != 4*size || m.MaxEntries() != 1 {
		return nil, fmt.Errorf("table map %d (flags %#x, value size %d): %w", id, m.Flags(), m.ValueSize(), ErrNoPatch)
	}
	mem, err := unix.Mmap(m.FD(), 0, int(4*size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map table map %d: %w", id, err)
	}
	// The kernel maps the array's value page-aligned, so the slots are
	// aligned for 32-bit atomic stores.
	return &tableView{mapID: id, mem: mem, slots: unsafe.Slice((*uint32)(unsafe.Pointer(&mem[0])), size)}, nil
}

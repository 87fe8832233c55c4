// Package healthdtest holds test doubles of the daemon's dependencies, for
// tests and benchmarks of healthd and of its users.
package healthdtest

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/xlb-project/xlb/loader"
)

// MemDatapath is an in-memory Datapath for tests and the control-plane
// benchmark. It enforces the ordering rule: SetTable fails when a slot names
// a backend that is not there, RemoveBackend fails while a table names it.
type MemDatapath struct {
	mu       sync.Mutex
	VIPByKey map[loader.VIPKey]loader.VIP
	Backends map[uint32]loader.Backend
	Tables   map[uint32][]uint32
	// Counters are returned by RetiredCounters (VIP ID) and
	// BackendCounters; RetireBackend moves the second into the first.
	Retired      map[uint32]loader.Counters
	BackendCount map[uint32]loader.Counters
	DropCount    map[string]uint64
	// Ops counts calls by method name.
	Ops map[string]int
	// Log, when not nil, records every successful write in order, e.g.
	// "PutBackend 3", "SetTable 0 [1 2 3]" (the distinct IDs in the table),
	// "RemoveBackend 3".
	Log *[]string
	// Fail, if set, is called first by every writing method; a non-nil
	// result is returned and nothing changes.
	Fail func(op string) error
	// DiscardTables: SetTable checks a table and keeps nothing, for
	// benchmarks with thousands of tables (RemoveBackend then cannot check
	// the ordering rule).
	DiscardTables bool
	// MaxBackends bounds backend IDs like the loader's maps; 0 means
	// loader.MaxBackends.
	MaxBackends uint32
	// NoPatch makes PatchTable refuse with loader.ErrNoPatch, as the
	// loader does for tables an earlier build created.
	NoPatch bool

	sizes map[uint32]uint32 // VIP ID → size of its installed table

	present []bool // by backend ID, for a fast ordering check
}

// NewMemDatapath returns an empty in-memory datapath.
func NewMemDatapath() *MemDatapath {
	return &MemDatapath{
		VIPByKey: map[loader.VIPKey]loader.VIP{}, Backends: map[uint32]loader.Backend{},
		Tables: map[uint32][]uint32{}, Retired: map[uint32]loader.Counters{},
		BackendCount: map[uint32]loader.Counters{}, DropCount: map[string]uint64{},
		Ops: map[string]int{},
	}
}

func (m *MemDatapath) op(name string) error {
	m.Ops[name]++
	if m.Fail != nil {
		return m.Fail(name)
	}
	return nil
}

// PutVIP implements Datapath.
func (m *MemDatapath) PutVIP(k loader.VIPKey, v loader.VIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("PutVIP"); err != nil {
		return err
	}
	if !slices.Contains(loader.SupportedTableSizes, v.TableSize) {
		return fmt.Errorf("put vip: table size %d: %w", v.TableSize, loader.ErrInvalid)
	}
	m.VIPByKey[k] = v
	m.logf("PutVIP %d", v.ID)
	return nil
}

// RemoveVIP implements Datapath.
func (m *MemDatapath) RemoveVIP(k loader.VIPKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("RemoveVIP"); err != nil {
		return err
	}
	v, ok := m.VIPByKey[k]
	if !ok {
		return fmt.Errorf("remove vip: %w", loader.ErrNotFound)
	}
	delete(m.VIPByKey, k)
	m.logf("RemoveVIP %d", v.ID)
	for _, o := range m.VIPByKey {
		if o.ID == v.ID {
			return nil
		}
	}
	delete(m.Tables, v.ID) // as the loader does: the table goes with its last VIP
	delete(m.sizes, v.ID)
	return nil
}

// PutBackend implements Datapath.
func (m *MemDatapath) PutBackend(id uint32, b loader.Backend) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("PutBackend"); err != nil {
		return err
	}
	limit := m.MaxBackends
	if limit == 0 {
		limit = loader.MaxBackends
	}
	if id == 0 || id >= limit {
		return fmt.Errorf("put backend: id %d: %w", id, loader.ErrInvalid)
	}
	m.Backends[id] = b
	if int(id) >= len(m.present) {
		m.present = append(m.present, make([]bool, int(id)+1-len(m.present))...)
	}
	m.present[id] = true
	m.logf("PutBackend %d", id)
	return nil
}

// PatchTables patches each table as PatchTable does (each counted and
// failed as one).
func (m *MemDatapath) PatchTables(ps []loader.TablePatch) []error {
	m.mu.Lock()
	m.Ops["PatchTables"]++
	m.mu.Unlock()
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = m.PatchTable(p.VIPID, p.Size, p.Slots, p.IDs)
	}
	return errs
}

// PutBackends writes backends in order as PutBackend does (each counted
// and failed as one), stopping at the first error; it returns how many it
// wrote, as loader.Datapath's batch does.
func (m *MemDatapath) PutBackends(ids []uint32, bs []loader.Backend) (int, error) {
	if len(ids) != len(bs) {
		return 0, fmt.Errorf("put backends: %d ids, %d backends: %w", len(ids), len(bs), loader.ErrInvalid)
	}
	m.mu.Lock()
	m.Ops["PutBackends"]++
	m.mu.Unlock()
	for i, id := range ids {
		if err := m.PutBackend(id, bs[i]); err != nil {
			return i, err
		}
	}
	return len(ids), nil
}

// RemoveBackend implements Datapath.
func (m *MemDatapath) RemoveBackend(id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("RemoveBackend"); err != nil {
		return err
	}
	for vip, t := range m.Tables {
		if slices.Contains(t, id) {
			return fmt.Errorf("ordering rule broken: remove backend %d while the table of VIP %d names it", id, vip)
		}
	}
	if _, ok := m.Backends[id]; !ok {
		return fmt.Errorf("remove backend %d: %w", id, loader.ErrNotFound)
	}
	delete(m.Backends, id)
	m.present[id] = false
	m.logf("RemoveBackend %d", id)
	return nil
}

// SetTable implements Datapath.
func (m *MemDatapath) SetTable(vipID uint32, table []uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("SetTable"); err != nil {
		return err
	}
	if !slices.Contains(loader.SupportedTableSizes, uint32(len(table))) {
		return fmt.Errorf("set table: length %d: %w", len(table), loader.ErrInvalid)
	}
	last := uint32(0)
	for _, id := range table {
		if id == last {
			continue // runs of one backend are common: check each once
		}
		if id == 0 {
			continue
		}
		if int(id) >= len(m.present) || !m.present[id] {
			return fmt.Errorf("ordering rule broken: table of VIP %d names backend %d, which is not there", vipID, id)
		}
		last = id
	}
	if m.Log != nil {
		m.logf("SetTable %d %v", vipID, backendsIn(table))
	}
	if m.sizes == nil {
		m.sizes = map[uint32]uint32{}
	}
	m.sizes[vipID] = uint32(len(table))
	if m.DiscardTables {
		return nil
	}
	m.Tables[vipID] = slices.Clone(table)
	return nil
}

// PatchTable rewrites slots of an installed table in place, like
// loader.Datapath.PatchTable; the ordering rule is checked on the IDs
// written, and every argument before the first write.
func (m *MemDatapath) PatchTable(vipID, size uint32, slots, ids []uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("PatchTable"); err != nil {
		return err
	}
	if m.NoPatch || m.sizes[vipID] != size {
		return fmt.Errorf("patch table of VIP %d: %w", vipID, loader.ErrNoPatch)
	}
	if len(slots) != len(ids) {
		return fmt.Errorf("patch table: %d slots, %d ids: %w", len(slots), len(ids), loader.ErrInvalid)
	}
	for i, s := range slots {
		if s >= size {
			return fmt.Errorf("patch table: slot %d of %d: %w", s, size, loader.ErrInvalid)
		}
		if id := ids[i]; id != 0 && (int(id) >= len(m.present) || !m.present[id]) {
			return fmt.Errorf("ordering rule broken: patch of the table of VIP %d names backend %d, which is not there", vipID, id)
		}
	}
	if m.DiscardTables {
		return nil
	}
	t := m.Tables[vipID]
	for i, s := range slots {
		t[s] = ids[i]
	}
	if m.Log != nil {
		m.logf("PatchTable %d %v", vipID, backendsIn(t))
	}
	return nil
}

// backendsIn returns the backend IDs a table names, sorted, each once.
func backendsIn(table []uint32) []uint32 {
	var ids []uint32
	for _, id := range table {
		if id != 0 && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Table returns a VIP's installed table, like loader.Datapath.Table.
func (m *MemDatapath) Table(vipID uint32) ([]uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.Tables[vipID]
	if !ok {
		return nil, fmt.Errorf("table of VIP %d: %w", vipID, loader.ErrNotFound)
	}
	return slices.Clone(t), nil
}

// VIPs lists the VIPs, like loader.Datapath.VIPs.
func (m *MemDatapath) VIPs() (map[loader.VIPKey]loader.VIP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.VIPByKey), nil
}

// RetiredCounters implements Datapath.
func (m *MemDatapath) RetiredCounters(vipID uint32) (loader.Counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Retired[vipID], nil
}

// RetireBackend implements Datapath.
func (m *MemDatapath) RetireBackend(vipID, backendID uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.op("RetireBackend"); err != nil {
		return err
	}
	r, c := m.Retired[vipID], m.BackendCount[backendID]
	m.Retired[vipID] = loader.Counters{Packets: r.Packets + c.Packets, Bytes: r.Bytes + c.Bytes}
	delete(m.BackendCount, backendID)
	return nil
}

// BackendCounters implements Datapath.
func (m *MemDatapath) BackendCounters(id uint32) (loader.Counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.BackendCount[id], nil
}

// Drops implements Datapath.
func (m *MemDatapath) Drops() (map[string]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.DropCount), nil
}

// Lock and Unlock let tests read the exported maps consistently.
func (m *MemDatapath) Lock() { m.mu.Lock() }

// Unlock releases Lock.
func (m *MemDatapath) Unlock() { m.mu.Unlock() }

func (m *MemDatapath) logf(format string, args ...any) {
	if m.Log != nil {
		*m.Log = append(*m.Log, fmt.Sprintf(format, args...))
	}
}

package healthd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

func maglevBuild(keys []string, weights []uint32, size uint32) ([]uint32, error) {
	bs := make([]maglev.Backend, len(keys))
	for i := range keys {
		bs[i] = maglev.Backend{Key: keys[i], Weight: weights[i]}
	}
	return maglev.Build(bs, size)
}

// tableData is a computed table, shared by the VIPs with its key (table
// size, then each backend usable for new flows with its weight).
type tableData struct {
	key     string
	pos     []uint32     // Maglev position of each slot; empty: no backend
	members []netip.Addr // the backend at each position, in address order
	slots   []int        // slots per position
}

// slotsOf returns how many slots a backend holds; 0 when not a member or t
// is nil.
func (t *tableData) slotsOf(a netip.Addr) int {
	if t == nil {
		return 0
	}
	if i, ok := slices.BinarySearchFunc(t.members, a, netip.Addr.Compare); ok {
		return t.slots[i]
	}
	return 0
}

// tablePatcher is implemented by datapaths that rewrite single slots of
// installed tables in place (loader.Datapath): errs[i] is the error of
// ps[i]; one wrapping loader.ErrNoPatch says that this table cannot be
// patched, and nothing was written to it.
type tablePatcher interface {
	PatchTables(ps []loader.TablePatch) (errs []error)
}

// installWorkers install whole tables concurrently: each is a new (or
// recycled) inner map swapped in, whose kernel work overlaps.
const installWorkers = 8

// installTables writes the new tables of all plans; it reports whether any
// was written. A VIP whose installed table has the same size and another
// non-empty backend set is patched: only the slots whose backend changed are
// rewritten (the moves are computed once per pair of backend sets), all
// VIPs in one call; any other, or one the datapath cannot patch, is
// installed whole.
func (d *Daemon) installTables(plans []*vipPlan) bool {
	var todo, whole []*vipPlan
	for _, p := range plans {
		if p.table != nil {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return false
	}
	patcher, _ := d.opts.Datapath.(tablePatcher)
	var patches []loader.TablePatch
	var patched []*vipPlan
	for _, p := range todo {
		if p.moved == nil || patcher == nil {
			whole = append(whole, p)
			continue
		}
		ids := d.dp.idArena.take(len(p.moved))[:len(p.moved)]
		for j, s := range p.moved {
			ids[j] = p.ids[p.table.pos[s]]
		}
		patches = append(patches, loader.TablePatch{VIPID: p.dv.id, Size: p.v.TableSize, Slots: p.moved, IDs: ids})
		patched = append(patched, p)
	}
	if len(patches) > 0 {
		for i, err := range patcher.PatchTables(patches) {
			switch p := patched[i]; {
			case err == nil:
				p.patched = true
			case errors.Is(err, loader.ErrNoPatch):
				whole = append(whole, p)
			default:
				p.err = err
			}
		}
	}
	d.setWholeTables(whole)
	for _, p := range todo {
		if p.err != nil {
			continue
		}
		p.dv.tableKey, p.dv.table, p.dv.installed = p.key, true, p.table
		d.stats.installs++
		if p.patched {
			d.stats.patches++
		}
	}
	return true
}

// setWholeTables installs whole tables, installWorkers at a time.
func (d *Daemon) setWholeTables(plans []*vipPlan) {
	work := make(chan *vipPlan)
	var wg sync.WaitGroup
	for range min(installWorkers, len(plans)) {
		wg.Go(func() {
			var buf []uint32 // the datapath copies it
			for p := range work {
				size := int(p.v.TableSize)
				if cap(buf) < size {
					buf = make([]uint32, size)
				}
				table := buf[:size]
				if len(p.table.pos) == size {
					for i, pos := range p.table.pos {
						table[i] = p.ids[pos]
					}
				} else {
					clear(table)
				}
				p.err = d.opts.Datapath.SetTable(p.dv.id, table)
			}
		})
	}
	for _, p := range plans {
		work <- p
	}
	close(work)
	wg.Wait()
}

// planTable computes the table of a VIP over its backends usable for new
// flows, unless the installed one is up to date (p.table stays nil). Tables
// are built once per distinct key and shared by the VIPs that have it; a
// table no VIP uses any more is kept a while (keptTables), so that a backend
// flipping back finds its table built. Nothing is allocated for a VIP whose
// key is known: a flip touching 1,000 VIPs leaves the garbage collector
// little to do.
func (d *Daemon) planTable(p *vipPlan) error {
	dv, v := p.dv, p.v
	// The key: size, then each member's address (16 bytes) and weight.
	kb := binary.LittleEndian.AppendUint32(d.dp.keyBuf[:0], v.TableSize)
	for _, b := range p.members {
		a := b.Addr.As16()
		kb = binary.LittleEndian.AppendUint32(append(kb, a[:]...), b.Weight)
	}
	d.dp.keyBuf = kb
	if dv.table && string(kb) == dv.tableKey {
		p.key = dv.tableKey
		return nil
	}
	td, ok := d.dp.tables[string(kb)]
	if !ok {
		keys := make([]string, len(p.members))
		weights := make([]uint32, len(p.members))
		for i, b := range p.members {
			keys[i], weights[i] = b.Addr.String(), b.Weight
		}
		pos, err := d.opts.Build(keys, weights, v.TableSize)
		if err != nil && !errors.Is(err, maglev.ErrNoBackends) {
			return fmt.Errorf("build table: %w", err)
		}
		if len(pos) != int(v.TableSize) {
			pos = make([]uint32, 0) // no backend: an empty table
		}
		td = &tableData{key: string(kb), pos: pos, members: make([]netip.Addr, len(p.members)), slots: make([]int, len(p.members))}
		for i, b := range p.members {
			td.members[i] = b.Addr
		}
		for _, pos := range td.pos {
			td.slots[pos]++
		}
		d.dp.tables[td.key] = td
		d.stats.rebuilds++
	}
	p.key = td.key
	p.table = td
	if old := d.dp.tables[dv.tableKey]; dv.table && old != nil && len(old.pos) > 0 && len(old.pos) == len(td.pos) {
		p.moved = d.movedSlots(old, td)
	}
	return nil
}

// keptTables is how many tables no VIP uses are kept for a VIP to come
// back to (a backend flipping unhealthy and healthy again).
const keptTables = 8

// forgetTables drops the tables no VIP uses, beyond the keptTables most
// recently left, and the moves of this reconcile.
func (d *Daemon) forgetTables() {
	inUse := make(map[*tableData]bool, len(d.dp.tables))
	for _, dv := range d.dp.vips {
		if td := d.dp.tables[dv.tableKey]; td != nil {
			inUse[td] = true
		}
	}
	for _, td := range d.dp.tables {
		if !inUse[td] && !slices.Contains(d.dp.unused, td) {
			d.dp.unused = append(d.dp.unused, td) // newly unused: the most recent
		}
	}
	kept := d.dp.unused[:0]
	for _, td := range d.dp.unused {
		if !inUse[td] && d.dp.tables[td.key] == td {
			kept = append(kept, td)
		}
	}
	clear(d.dp.unused[len(kept):])
	d.dp.unused = kept
	if n := len(kept) - keptTables; n > 0 {
		for _, td := range kept[:n] {
			delete(d.dp.tables, td.key)
		}
		d.dp.unused = slices.Delete(kept, 0, n)
	}
	clear(d.dp.moves)
}

// movedSlots lists the slots whose backend differs between two tables of
// one size, by backend identity (positions shift when a backend joins or
// leaves). Each pair of tables is compared once per reconcile: VIPs with
// the same backend set and the same change share the list.
func (d *Daemon) movedSlots(old, td *tableData) []uint32 {
	pair := [2]*tableData{old, td}
	if m, ok := d.dp.moves[pair]; ok {
		return m
	}
	at := make(map[netip.Addr]int32, len(td.members))
	for i, a := range td.members {
		at[a] = int32(i)
	}
	remap := make([]int32, len(old.members)) // old position → new; -1: gone
	for i, a := range old.members {
		if n, ok := at[a]; ok {
			remap[i] = n
		} else {
			remap[i] = -1
		}
	}
	moved := []uint32{}
	for s, pos := range td.pos {
		if remap[old.pos[s]] != int32(pos) {
			moved = append(moved, uint32(s))
		}
	}
	d.dp.moves[pair] = moved
	return moved
}

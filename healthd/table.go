package healthd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/xlb-project/xlb/maglev"
)

func maglevBuild(keys []string, weights []uint32, size uint32) ([]uint32, error) {
	bs := make([]maglev.Backend, len(keys))
	for i := range keys {
		bs[i] = maglev.Backend{Key: keys[i], Weight: weights[i]}
	}
	return maglev.Build(bs, size)
}

// installWorkers install tables concurrently: each install waits for the
// kernel (an RCU grace period when the outer map's entry is replaced), and
// those waits overlap.
const installWorkers = 8

// installTables writes the new tables of all plans; it reports whether any
// was written.
func (d *Daemon) installTables(plans []*vipPlan) bool {
	var todo []*vipPlan
	for _, p := range plans {
		if p.pos != nil {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return false
	}
	work := make(chan *vipPlan)
	var wg sync.WaitGroup
	for range min(installWorkers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []uint32
			for p := range work {
				size := int(p.v.TableSize)
				if cap(buf) < size {
					buf = make([]uint32, size)
				}
				table := buf[:size] // the datapath copies it
				counts := make([]int, len(p.ids))
				if len(p.pos) == size {
					for i, pos := range p.pos {
						table[i] = p.ids[pos]
						counts[pos]++
					}
				} else {
					clear(table)
				}
				p.slots = make(map[netip.Addr]int, len(p.members))
				for i, b := range p.members {
					p.slots[b.Addr] = counts[i]
				}
				p.err = d.opts.Datapath.SetTable(p.dv.id, table)
			}
		}()
	}
	for _, p := range todo {
		work <- p
	}
	close(work)
	wg.Wait()
	for _, p := range todo {
		if p.err == nil {
			p.dv.tableKey, p.dv.table, p.dv.slots = p.key, true, p.slots
			d.stats.installs++
		}
	}
	return true
}

// planTable computes the table of a VIP over its backends usable for new
// flows, unless the installed one is up to date (p.pos stays nil). Tables
// are built once per distinct (size, backends, weights) and shared by the
// VIPs of one reconcile.
func (d *Daemon) planTable(p *vipPlan) error {
	dv, v := p.dv, p.v
	keys := make([]string, len(p.members))
	weights := make([]uint32, len(p.members))
	var kb strings.Builder
	kb.WriteString(strconv.FormatUint(uint64(v.TableSize), 10))
	for i, b := range p.members {
		keys[i], weights[i] = b.Addr.String(), b.Weight
		kb.WriteString(" " + keys[i] + "=" + strconv.FormatUint(uint64(b.Weight), 10))
	}
	p.key = kb.String()
	if p.key == dv.tableKey && dv.table {
		return nil
	}
	pos, ok := d.dp.tables[p.key]
	if !ok {
		var err error
		pos, err = d.opts.Build(keys, weights, v.TableSize)
		if err != nil && !errors.Is(err, maglev.ErrNoBackends) {
			return fmt.Errorf("build table: %w", err)
		}
		if len(pos) != int(v.TableSize) {
			pos = make([]uint32, 0) // no backend: an empty table
		}
		d.dp.tables[p.key] = pos
		d.stats.rebuilds++
	}
	p.pos = pos
	p.ids = make([]uint32, len(p.members))
	for i, b := range p.members {
		p.ids[i] = dv.backends[b.Addr].id
	}
	return nil
}

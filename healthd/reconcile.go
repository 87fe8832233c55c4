package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
)

// reconcileLocked writes the desired state into the datapath, following the
// ordering rule: a backend is written before any slot names it, a slot stops
// naming it before its ID is freed; a VIP's table is installed before its
// VIP entry and the VIP entry removed before its table and backends.
func (d *Daemon) reconcileLocked() error {
	start := time.Now()
	d.syncChecksLocked()
	var errs []error
	var plans []*vipPlan
	for _, v := range d.cur.SortedVIPs() {
		p, err := d.prepareVIP(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", v.Key, err))
			continue
		}
		plans = append(plans, p)
	}
	changedTable := d.installTables(plans)
	for _, p := range plans {
		if err := d.finishVIP(p); err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", p.v.Key, err))
		}
	}
	for k, dv := range d.dp.vips {
		if _, ok := d.cur.VIPs[k]; ok {
			continue
		}
		if err := d.removeVIP(k, dv); err != nil {
			errs = append(errs, fmt.Errorf("remove vip %s: %w", k, err))
		}
	}
	// Forget tables no VIP uses any more.
	inUse := map[string]bool{}
	for _, dv := range d.dp.vips {
		inUse[dv.tableKey] = true
	}
	for k := range d.dp.tables {
		if !inUse[k] {
			delete(d.dp.tables, k)
		}
	}
	if changedTable {
		d.stats.lastDuration = time.Since(start)
		d.metrics.reconcile.WithLabelValues().Observe(d.stats.lastDuration.Seconds())
	}
	if err := d.saveIDsLocked(); err != nil {
		errs = append(errs, err)
	}
	d.lastErr = errors.Join(errs...)
	return d.lastErr
}

// vipPlan is the work of one VIP in a reconcile, in three phases: backends
// that become (more) usable are written first (prepareVIP), then the tables
// of all VIPs are installed in parallel (installTables), then the VIP entry,
// backends that become less usable, and removals (finishVIP). So a backend
// is written before a slot names it, and a slot stops naming it before its
// ID is freed.
type vipPlan struct {
	v       *VIP
	dv      *dpVIP
	want    loader.VIP
	after   []backendStep
	members []*Backend
	ids     []uint32 // backend ID of each member
	pos     []uint32 // Maglev positions; nil: the table is up to date
	key     string
	err     error // of the table installation
	slots   map[netip.Addr]int
}

type backendStep struct {
	b    *Backend
	db   *dpBackend
	want loader.Backend
}

func (d *Daemon) putBackend(s backendStep) error {
	if err := d.opts.Datapath.PutBackend(s.db.id, s.want); err != nil {
		return fmt.Errorf("put backend %s (id %d): %w", s.b.Addr, s.db.id, err)
	}
	s.db.b, s.db.written = s.want, true
	return nil
}

// prepareVIP computes what a VIP needs and writes the backends that must be
// there before its new table.
func (d *Daemon) prepareVIP(v *VIP) (*vipPlan, error) {
	dv := d.dp.vips[v.Key]
	if dv == nil {
		id, err := d.dp.vipIDs.get()
		if err != nil {
			return nil, fmt.Errorf("allocate VIP ID: %w", err)
		}
		dv = &dpVIP{id: id, backends: map[netip.Addr]*dpBackend{}}
		d.dp.vips[v.Key] = dv
	}
	dv.err = ""
	p := &vipPlan{v: v, dv: dv, want: loader.VIP{ID: dv.id, HashSrcIPOnly: v.Hash == "src-ip", TableSize: v.TableSize}}
	if v.Mode == "l2dsr" {
		p.want.Mode = loader.ModeL2DSR
	}

	// Panic: fewer than the threshold share of active backends healthy.
	dv.active, dv.healthy = 0, 0
	for _, b := range v.Backends {
		if b.Admin == api.Active {
			dv.active++
			if _, ok := d.healthOf(v, b); ok {
				dv.healthy++
			}
		}
	}
	dv.panic = v.PanicThreshold > 0 && dv.active > 0 && dv.healthy*100 < v.PanicThreshold*dv.active

	var errs []error
	for _, b := range v.Backends {
		db := dv.backends[b.Addr]
		if db == nil {
			id, err := d.dp.backendID.get()
			if err != nil {
				errs = append(errs, fmt.Errorf("backend %s: allocate ID: %w", b.Addr, err))
				continue
			}
			db = &dpBackend{id: id}
			dv.backends[b.Addr] = db
		}
		mac, merr := d.resolve(b.Addr, v.Mode == "l2dsr")
		db.err = ""
		if merr != nil {
			db.err = merr.Error()
			if db.written {
				mac = db.b.MAC // keep the last known next hop
			}
		}
		_, healthy := d.healthOf(v, b)
		nb := loader.Backend{Addr: b.Addr, MAC: mac}
		nb.UsableNew = b.Admin == api.Active && (healthy || dv.panic) && mac != nil
		nb.UsableEstablished = nb.UsableNew || (b.Admin == api.Draining && mac != nil)
		if mac == nil {
			continue // unresolvable: reported, kept out of the table, not black-holed
		}
		if nb.UsableNew {
			p.members = append(p.members, b)
		}
		switch s := (backendStep{b, db, nb}); {
		case !db.written, !bytes.Equal(db.b.MAC, nb.MAC),
			nb.UsableNew && !db.b.UsableNew, nb.UsableEstablished && !db.b.UsableEstablished:
			if err := d.putBackend(s); err != nil {
				return nil, errors.Join(append(errs, err)...)
			}
		case !backendEqual(nb, db.b):
			p.after = append(p.after, s)
		}
	}
	if err := errors.Join(errs...); err != nil {
		dv.err = err.Error()
	}

	if err := d.planTable(p); err != nil {
		return nil, err
	}
	return p, nil
}

// finishVIP writes the VIP entry once its table is there, then the
// backends that became less usable, then removes backends no longer
// desired (no slot names them any more).
func (d *Daemon) finishVIP(p *vipPlan) error {
	dv, v := p.dv, p.v
	if p.pos != nil && p.err != nil {
		return fmt.Errorf("set table: %w", p.err)
	}
	if !dv.written || dv.vip != p.want {
		if err := d.opts.Datapath.PutVIP(toLoaderKey(v.Key), p.want); err != nil {
			return fmt.Errorf("put VIP: %w", err)
		}
		dv.vip, dv.written = p.want, true
	}
	for _, s := range p.after {
		if err := d.putBackend(s); err != nil {
			return err
		}
	}
	desired := make(map[netip.Addr]bool, len(v.Backends))
	for _, b := range v.Backends {
		desired[b.Addr] = true
	}
	var errs []error
	for a, db := range dv.backends {
		if desired[a] {
			continue
		}
		if db.written {
			if err := d.opts.Datapath.RemoveBackend(db.id); err != nil {
				errs = append(errs, fmt.Errorf("remove backend %s (id %d): %w", a, db.id, err))
				continue
			}
			// The VIP keeps the backend's traffic in its total; on an
			// error that part of the total is lost, nothing else.
			if err := d.opts.Datapath.RetireBackend(dv.id, db.id); err != nil {
				errs = append(errs, fmt.Errorf("keep counters of removed backend %s (id %d): %w", a, db.id, err))
			}
		}
		d.dp.backendID.put(db.id)
		delete(dv.backends, a)
	}
	return errors.Join(errs...)
}

func backendEqual(a, b loader.Backend) bool {
	return a.Addr == b.Addr && bytes.Equal(a.MAC, b.MAC) && a.UsableNew == b.UsableNew && a.UsableEstablished == b.UsableEstablished
}

// removeVIP removes a VIP from the datapath: the VIP entry first, which
// takes its table with it (no packet reaches the table any more), then its
// backends.
func (d *Daemon) removeVIP(k api.VIPKey, dv *dpVIP) error {
	if dv.written || dv.table {
		if err := d.opts.Datapath.RemoveVIP(toLoaderKey(k)); err != nil && !errors.Is(err, loader.ErrNotFound) {
			return err
		}
		dv.written, dv.table = false, false
	}
	for a, db := range dv.backends {
		if db.written {
			if err := d.opts.Datapath.RemoveBackend(db.id); err != nil && !errors.Is(err, loader.ErrNotFound) {
				return err
			}
		}
		d.dp.backendID.put(db.id)
		delete(dv.backends, a)
	}
	d.dp.vipIDs.put(dv.id)
	delete(d.dp.vips, k)
	return nil
}

package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
	d.dp.memberArena.reset()
	d.dp.idArena.reset()
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
	// Backends that become (more) usable, before any table names them.
	plans = d.keepPlans(plans, d.putSteps(plans, func(p *vipPlan) []backendStep { return p.before }), &errs)
	planned := time.Now()
	changedTable := d.installTables(plans)
	installed := time.Now()
	var done []*vipPlan
	for _, p := range plans {
		if err := d.putVIPEntry(p); err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", p.v.Key, err))
			continue
		}
		done = append(done, p)
	}
	// Backends that become less usable, once no new table names them.
	done = d.keepPlans(done, d.putSteps(done, func(p *vipPlan) []backendStep { return p.after }), &errs)
	for _, p := range done {
		if err := d.removeUndesired(p); err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", p.v.Key, err))
			continue
		}
		// Everything of this VIP written: the next reconcile may trust
		// its memo for the backends whose health did not change.
		p.dv.memoOK = !p.memoBad
	}
	finished := time.Now()
	for k, dv := range d.dp.vips {
		if _, ok := d.cur.VIPs[k]; ok {
			continue
		}
		if err := d.removeVIP(k, dv); err != nil {
			errs = append(errs, fmt.Errorf("remove vip %s: %w", k, err))
		}
	}
	d.forgetTables()
	if changedTable {
		d.stats.lastDuration = time.Since(start)
		d.stats.lastPhases = reconcilePhases{
			plan: planned.Sub(start), install: installed.Sub(planned), finish: finished.Sub(installed),
		}
		d.metrics.reconcile.WithLabelValues().Observe(d.stats.lastDuration.Seconds())
	}
	if err := d.saveIDsLocked(); err != nil {
		errs = append(errs, err)
	}
	d.lastErr = errors.Join(errs...)
	d.announceLocked()
	return d.lastErr
}

// vipPlan is the work of one VIP in a reconcile, in phases, each done for
// all VIPs before the next: backends that become (more) usable are written
// (prepareVIP computes them, putSteps writes them in one batch), the tables
// are installed in parallel (installTables), the VIP entries written
// (putVIPEntry), backends that become less usable written in one batch,
// backends no longer desired removed (removeUndesired). So a backend is
// written before a slot names it, and a slot stops naming it before its ID
// is freed.
type vipPlan struct {
	v       *VIP
	dv      *dpVIP
	want    loader.VIP
	before  []backendStep // backends to write before the table
	after   []backendStep // after it
	members []*Backend
	ids     []uint32   // backend ID of each member
	table   *tableData // to install; nil: the installed table is up to date
	moved   []uint32   // slots to rewrite in place; nil: install it whole
	patched bool       // the installed table was patched
	memoBad bool       // a backend had an error: the VIP's memo is not to be trusted
	present int        // desired backends in dv.backends; fewer than it holds: some leave
	key     string
	err     error // of the table installation
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
	p := &vipPlan{v: v, dv: dv, want: loader.VIP{ID: dv.id, HashSrcIPOnly: v.Hash == "src-ip", Stateless: v.Stateless, TableSize: v.TableSize}}
	if v.Mode == "l2dsr" {
		p.want.Mode = loader.ModeL2DSR
	}

	// dv.order holds dv.backends, and dv.checks their health, in the order
	// of v.Backends while v is the same desired VIP: a change of the
	// desired state makes a new one (and syncs the checks first).
	if dv.orderOf != v || len(dv.order) != len(v.Backends) {
		dv.order, dv.orderOf = make([]*dpBackend, len(v.Backends)), v
		dv.memoOK = false
		dv.checks = make([]*healthInfo, len(v.Backends))
		for i, b := range v.Backends {
			dv.checks[i] = d.health[b.checkID]
		}
	}

	// Panic: fewer than the threshold share of active backends healthy.
	healthy := slices.Grow(d.dp.healthyBuf[:0], len(v.Backends))[:len(v.Backends)]
	d.dp.healthyBuf = healthy
	memo := dv.memoOK && !d.noMemo && dv.memoHop == d.nextHopGen && len(dv.memo) == len(v.Backends)
	dv.memoOK = false // until this reconcile of the VIP succeeds (reconcileLocked)
	dv.active, dv.healthy = 0, 0
	for i, b := range v.Backends {
		// As healthOf: unchecked counts as healthy, a check not running
		// (yet) as unknown. The memo spares reading the backend.
		var unchecked, active bool
		if memo {
			unchecked, active = dv.memo[i].unchecked, dv.memo[i].active
		} else {
			unchecked, active = b.checkID == "", b.Admin == api.Active
		}
		healthy[i] = unchecked || dv.checks[i] != nil && dv.checks[i].state == HealthHealthy
		if active {
			dv.active++
			if healthy[i] {
				dv.healthy++
			}
		}
	}
	inPanic := v.PanicThreshold > 0 && dv.active > 0 && dv.healthy*100 < v.PanicThreshold*dv.active
	memo = memo && inPanic == dv.panic
	dv.panic = inPanic
	if !memo {
		dv.memo = slices.Grow(dv.memo[:0], len(v.Backends))[:len(v.Backends)]
	}
	dv.memoHop = d.nextHopGen

	// The plans of one reconcile share two arenas: a flip of 1,000 VIPs
	// allocates nothing per VIP here.
	p.members = d.dp.memberArena.take(len(v.Backends))
	p.ids = d.dp.idArena.take(len(v.Backends))
	var errs []error
	for i, b := range v.Backends {
		if m := &dv.memo[i]; memo && m.healthy == healthy[i] {
			// Nothing this backend's state depends on changed since a
			// reconcile that wrote it all: its entry is as written.
			d.stats.memoSkips++
			p.present++
			if m.usableNew {
				p.members = append(p.members, b)
				p.ids = append(p.ids, m.id)
			}
			continue
		}
		if err := d.planBackend(p, i, b, healthy[i]); err != nil {
			errs = append(errs, err)
			p.memoBad = true
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

// planBackend decides what the backend at position i of a VIP needs, and
// notes it in the VIP's memo: its next hop, whether it is usable for new
// and for established flows, whether it is a table member, and whether its
// entry must be written before the table (more usable) or after (less).
func (d *Daemon) planBackend(p *vipPlan, i int, b *Backend, healthy bool) error {
	dv, v := p.dv, p.v
	m := &dv.memo[i]
	*m = backendMemo{unchecked: b.checkID == "", active: b.Admin == api.Active, healthy: healthy}
	db := dv.order[i]
	if db == nil {
		db = dv.backends[b.Addr]
	}
	if db == nil {
		id, err := d.dp.backendID.get()
		if err != nil {
			return fmt.Errorf("backend %s: allocate ID: %w", b.Addr, err)
		}
		db = &dpBackend{id: id}
		dv.backends[b.Addr] = db
	}
	dv.order[i] = db
	m.id = db.id
	p.present++
	mac, merr := d.resolveFor(db, b.Addr, v.Mode == "l2dsr")
	if db.err != "" {
		db.err = "" // written only when it changes: 100,000 pairs stay clean in the cache
	}
	if merr != nil {
		p.memoBad = true
		db.err = merr.Error()
		if db.written {
			mac = db.b.MAC // keep the last known next hop
		}
	}
	nb := loader.Backend{Addr: b.Addr, MAC: mac}
	nb.UsableNew = b.Admin == api.Active && (healthy || dv.panic) && mac != nil
	nb.UsableEstablished = nb.UsableNew || (b.Admin == api.Draining && mac != nil)
	if mac == nil {
		return nil // unresolvable: reported, kept out of the table, not black-holed
	}
	if nb.UsableNew {
		p.members = append(p.members, b)
		p.ids = append(p.ids, db.id)
	}
	switch s := (backendStep{b, db, nb}); {
	case !db.written, !bytes.Equal(db.b.MAC, nb.MAC),
		nb.UsableNew && !db.b.UsableNew, nb.UsableEstablished && !db.b.UsableEstablished:
		p.before = append(p.before, s)
	case !backendEqual(nb, db.b):
		p.after = append(p.after, s)
	}
	m.usableNew = nb.UsableNew
	return nil
}

// putVIPEntry writes the VIP entry once its table is there.
func (d *Daemon) putVIPEntry(p *vipPlan) error {
	dv, v := p.dv, p.v
	if p.table != nil && p.err != nil {
		return fmt.Errorf("set table: %w", p.err)
	}
	if !dv.written || dv.vip != p.want {
		if err := d.opts.Datapath.PutVIP(toLoaderKey(v.Key), p.want); err != nil {
			return fmt.Errorf("put VIP: %w", err)
		}
		dv.vip, dv.written = p.want, true
	}
	return nil
}

// removeUndesired removes the backends of a VIP no longer desired; no slot
// names them any more.
func (d *Daemon) removeUndesired(p *vipPlan) error {
	dv, v := p.dv, p.v
	if len(dv.backends) == p.present {
		return nil // every backend there is desired
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

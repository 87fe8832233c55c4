package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// dpState is what the daemon has written to the datapath, so a reconcile
// writes only differences and in the right order.
type dpState struct {
	vips      map[VIPKey]*dpVIP
	vipIDs    idAlloc
	backendID idAlloc
	tables    map[string][]uint32 // backend set → Maglev positions, shared by VIPs
}

type dpVIP struct {
	id       uint32
	vip      loader.VIP
	written  bool // PutVIP done
	tableKey string
	table    bool // a table was installed
	panic    bool
	healthy  int // active backends that are healthy
	active   int
	backends map[netip.Addr]*dpBackend
	slots    map[netip.Addr]int
	err      string // why the VIP is not (fully) installed
}

type dpBackend struct {
	id      uint32
	b       loader.Backend
	written bool
	err     string // e.g. next hop unresolved
	sample  *sample
}

// sample is a counter reading, for rates and idle drains.
type sample struct {
	at      time.Time
	c       loader.Counters
	moved   time.Time // last time the packet count changed
	pps     float64
	bps     float64
	current loader.Counters
}

func newDPState() dpState {
	return dpState{
		vips:      map[VIPKey]*dpVIP{},
		vipIDs:    idAlloc{first: 0, limit: loader.MaxVIPs, used: map[uint32]bool{}},
		backendID: idAlloc{first: 1, limit: loader.MaxBackends, used: map[uint32]bool{}},
		tables:    map[string][]uint32{},
	}
}

func (s *dpState) sampleOf(k VIPKey, a netip.Addr) *sample {
	if v := s.vips[k]; v != nil {
		if b := v.backends[a]; b != nil {
			return b.sample
		}
	}
	return nil
}

// idAlloc hands out IDs round robin, so a freed ID is reused as late as
// possible (flows in the LRU may still name it).
type idAlloc struct {
	first, limit, next uint32
	used               map[uint32]bool
	changed            bool // since the ID file was written
}

var errNoIDs = errors.New("no free ID")

func (a *idAlloc) get() (uint32, error) {
	if a.next < a.first {
		a.next = a.first
	}
	for range a.limit - a.first {
		id := a.next
		a.next++
		if a.next >= a.limit {
			a.next = a.first
		}
		if !a.used[id] {
			a.used[id] = true
			a.changed = true
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d in use", errNoIDs, a.limit-a.first)
}

func (a *idAlloc) put(id uint32) {
	delete(a.used, id)
	a.changed = true
}

func maglevBuild(keys []string, weights []uint32, size uint32) ([]uint32, error) {
	bs := make([]maglev.Backend, len(keys))
	for i := range keys {
		bs[i] = maglev.Backend{Key: keys[i], Weight: weights[i]}
	}
	return maglev.Build(bs, size)
}

// healthOf returns the health of a backend and whether it counts as healthy.
func (d *Daemon) healthOf(v *VIP, b *Backend) (*healthInfo, bool) {
	id := checkID(v, b)
	if id == "" {
		return &healthInfo{state: HealthUnchecked}, true
	}
	h := d.health[id]
	if h == nil {
		return &healthInfo{state: HealthUnknown}, false
	}
	return h, h.state == HealthHealthy
}

// checkID names the effective check of a backend; backends of several VIPs
// with the same check share it. "" means unchecked.
func checkID(v *VIP, b *Backend) string {
	c := v.checkFor(b)
	if c == nil {
		return ""
	}
	t := netip.AddrPortFrom(b.Addr, c.Port)
	var sb strings.Builder
	sb.WriteString(c.Kind + "://" + t.String())
	if c.Kind != "tcp" {
		sb.WriteString(orDefault(c.Path, "/"))
		if c.Host != "" {
			sb.WriteString(" host=" + c.Host)
		}
	}
	if c.Interval != 0 || c.Timeout != 0 || c.Rise != 0 || c.Fall != 0 {
		fmt.Fprintf(&sb, " interval=%s timeout=%s rise=%d fall=%d", c.Interval, c.Timeout, c.Rise, c.Fall)
	}
	return sb.String()
}

// syncChecksLocked makes the prober run exactly the checks the desired
// state needs.
func (d *Daemon) syncChecksLocked() {
	want := map[string]HealthCheck{}
	for _, v := range d.cur.VIPs {
		for _, b := range v.Backends {
			id := checkID(v, b)
			if id == "" {
				continue
			}
			if _, ok := want[id]; ok {
				continue
			}
			c := v.checkFor(b)
			want[id] = HealthCheck{
				Kind: c.Kind, Target: netip.AddrPortFrom(b.Addr, c.Port),
				Interval: time.Duration(c.Interval), Timeout: time.Duration(c.Timeout),
				Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host,
			}
		}
	}
	for id := range d.checks {
		if _, ok := want[id]; !ok {
			if d.opts.Prober != nil {
				d.opts.Prober.Remove(id)
			}
			delete(d.checks, id)
			delete(d.health, id)
		}
	}
	for id, c := range want {
		if _, ok := d.checks[id]; ok {
			continue
		}
		if d.opts.Prober != nil {
			if err := d.opts.Prober.Set(id, c); err != nil {
				d.log.Error("set health check", "check", id, "err", err)
				continue
			}
		}
		d.checks[id] = c
		d.health[id] = &healthInfo{state: HealthUnknown, since: d.opts.Clock.Now()}
	}
}

// reconcileLocked writes the desired state into the datapath, following the
// ordering rule: a backend is written before any slot names it, a slot stops
// naming it before its ID is freed; a VIP's table is installed before its
// VIP entry and the VIP entry removed before its table and backends.
func (d *Daemon) reconcileLocked() error {
	start := time.Now()
	d.syncChecksLocked()
	var errs []error
	changedTable := false
	for _, v := range d.cur.SortedVIPs() {
		changed, err := d.reconcileVIP(v)
		changedTable = changedTable || changed
		if err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", v.Key, err))
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

// reconcileVIP brings one VIP up to date; it reports whether its table
// changed.
func (d *Daemon) reconcileVIP(v *VIP) (bool, error) {
	dv := d.dp.vips[v.Key]
	if dv == nil {
		id, err := d.dp.vipIDs.get()
		if err != nil {
			return false, fmt.Errorf("allocate VIP ID: %w", err)
		}
		dv = &dpVIP{id: id, backends: map[netip.Addr]*dpBackend{}}
		d.dp.vips[v.Key] = dv
	}
	dv.err = ""
	want := loader.VIP{ID: dv.id, HashSrcIPOnly: v.Hash == "src-ip", TableSize: v.TableSize}
	if v.Mode == "l2dsr" {
		want.Mode = loader.ModeL2DSR
	}

	// Panic: fewer than the threshold share of active backends healthy.
	dv.active, dv.healthy = 0, 0
	for _, b := range v.Backends {
		if b.Admin == Active {
			dv.active++
			if _, ok := d.healthOf(v, b); ok {
				dv.healthy++
			}
		}
	}
	dv.panic = v.PanicThreshold > 0 && dv.active > 0 && dv.healthy*100 < v.PanicThreshold*dv.active

	type step struct {
		b    *Backend
		db   *dpBackend
		want loader.Backend
	}
	var before, after []step
	var members []*Backend
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
		nb.UsableNew = b.Admin == Active && (healthy || dv.panic) && mac != nil
		nb.UsableEstablished = nb.UsableNew || (b.Admin == Draining && mac != nil)
		if mac == nil {
			continue // unresolvable: reported, kept out of the table, not black-holed
		}
		if nb.UsableNew {
			members = append(members, b)
		}
		switch {
		case !db.written, !bytes.Equal(db.b.MAC, nb.MAC),
			nb.UsableNew && !db.b.UsableNew, nb.UsableEstablished && !db.b.UsableEstablished:
			before = append(before, step{b, db, nb})
		case !backendEqual(nb, db.b):
			after = append(after, step{b, db, nb})
		}
	}
	put := func(s step) error {
		if err := d.opts.Datapath.PutBackend(s.db.id, s.want); err != nil {
			return fmt.Errorf("put backend %s (id %d): %w", s.b.Addr, s.db.id, err)
		}
		s.db.b, s.db.written = s.want, true
		return nil
	}
	for _, s := range before {
		if err := put(s); err != nil {
			return false, errors.Join(append(errs, err)...)
		}
	}

	// The table over the backends usable for new flows.
	keys := make([]string, len(members))
	weights := make([]uint32, len(members))
	var kb strings.Builder
	kb.WriteString(strconv.FormatUint(uint64(v.TableSize), 10))
	for i, b := range members {
		keys[i], weights[i] = b.Addr.String(), b.Weight
		kb.WriteString(" " + keys[i] + "=" + strconv.FormatUint(uint64(b.Weight), 10))
	}
	tableKey := kb.String()
	changed := false
	if tableKey != dv.tableKey || !dv.table {
		pos, ok := d.dp.tables[tableKey]
		if !ok {
			var err error
			pos, err = d.opts.Build(keys, weights, v.TableSize)
			if err != nil && !errors.Is(err, maglev.ErrNoBackends) {
				return false, errors.Join(append(errs, fmt.Errorf("build table: %w", err))...)
			}
			d.dp.tables[tableKey] = pos
			d.stats.rebuilds++
		}
		table := make([]uint32, v.TableSize)
		slots := make(map[netip.Addr]int, len(members))
		if len(pos) == len(table) {
			for i, p := range pos {
				b := members[p]
				table[i] = dv.backends[b.Addr].id
				slots[b.Addr]++
			}
		}
		if err := d.opts.Datapath.SetTable(dv.id, table); err != nil {
			return false, errors.Join(append(errs, fmt.Errorf("set table: %w", err))...)
		}
		dv.tableKey, dv.table, dv.slots = tableKey, true, slots
		d.stats.installs++
		changed = true
	}
	if !dv.written || dv.vip != want {
		if err := d.opts.Datapath.PutVIP(toLoaderKey(v.Key), want); err != nil {
			return changed, errors.Join(append(errs, fmt.Errorf("put VIP: %w", err))...)
		}
		dv.vip, dv.written = want, true
	}
	for _, s := range after {
		if err := put(s); err != nil {
			return changed, errors.Join(append(errs, err)...)
		}
	}
	// Backends no longer desired: the table no longer names them.
	desired := make(map[netip.Addr]bool, len(v.Backends))
	for _, b := range v.Backends {
		desired[b.Addr] = true
	}
	for a, db := range dv.backends {
		if desired[a] {
			continue
		}
		if db.written {
			if err := d.opts.Datapath.RemoveBackend(db.id); err != nil {
				errs = append(errs, fmt.Errorf("remove backend %s (id %d): %w", a, db.id, err))
				continue
			}
		}
		d.dp.backendID.put(db.id)
		delete(dv.backends, a)
	}
	return changed, errors.Join(errs...)
}

func backendEqual(a, b loader.Backend) bool {
	return a.Addr == b.Addr && bytes.Equal(a.MAC, b.MAC) && a.UsableNew == b.UsableNew && a.UsableEstablished == b.UsableEstablished
}

// removeVIP removes a VIP from the datapath: the VIP entry first, which
// takes its table with it (no packet reaches the table any more), then its
// backends.
func (d *Daemon) removeVIP(k VIPKey, dv *dpVIP) error {
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

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

func (d *Daemon) resolve(a netip.Addr, onLink bool) (net.HardwareAddr, error) {
	if d.opts.Resolver == nil {
		return zeroMAC, nil
	}
	return d.opts.Resolver.Resolve(a, onLink)
}

// sampleLocked reads the counters of every written backend.
func (d *Daemon) sampleLocked(now time.Time) {
	for _, dv := range d.dp.vips {
		for _, db := range dv.backends {
			if !db.written {
				continue
			}
			c, err := d.opts.Datapath.BackendCounters(db.id)
			if err != nil {
				continue
			}
			s := db.sample
			if s == nil {
				db.sample = &sample{at: now, c: c, current: c, moved: now}
				continue
			}
			if dt := now.Sub(s.at).Seconds(); dt > 0 {
				s.pps = float64(c.Packets-s.c.Packets) / dt
				s.bps = float64(c.Bytes-s.c.Bytes) / dt
			}
			if c.Packets != s.c.Packets {
				s.moved = now
			}
			s.at, s.c, s.current = now, c, c
		}
	}
}

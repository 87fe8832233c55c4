package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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

func newDPState(maxVIPs, maxBackends uint32) dpState {
	if maxVIPs == 0 {
		maxVIPs = loader.MaxVIPs
	}
	if maxBackends == 0 {
		maxBackends = loader.MaxBackends
	}
	return dpState{
		vips:      map[VIPKey]*dpVIP{},
		vipIDs:    idAlloc{first: 0, limit: maxVIPs, used: map[uint32]bool{}},
		backendID: idAlloc{first: 1, limit: maxBackends, used: map[uint32]bool{}},
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
	id := b.checkID
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
			id := b.checkID
			if id == "" {
				continue
			}
			warm := d.warm[v.Key][b.Addr]
			if c, ok := want[id]; ok {
				if warm && !c.StartHealthy {
					c.StartHealthy = true
					want[id] = c
				}
				continue
			}
			c := v.checkFor(b)
			want[id] = HealthCheck{
				Kind: c.Kind, Target: netip.AddrPortFrom(b.Addr, c.Port),
				Interval: time.Duration(c.Interval), Timeout: time.Duration(c.Timeout),
				Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host,
				StartHealthy: warm,
			}
		}
	}
	d.warm = nil
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
		state := HealthUnknown
		if c.StartHealthy {
			state = HealthHealthy
		}
		d.health[id] = &healthInfo{state: state, since: d.opts.Clock.Now()}
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
		if b.Admin == Active {
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
		nb.UsableNew = b.Admin == Active && (healthy || dv.panic) && mac != nil
		nb.UsableEstablished = nb.UsableNew || (b.Admin == Draining && mac != nil)
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

	// The table over the backends usable for new flows.
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
		return p, nil
	}
	pos, ok := d.dp.tables[p.key]
	if !ok {
		var err error
		pos, err = d.opts.Build(keys, weights, v.TableSize)
		if err != nil && !errors.Is(err, maglev.ErrNoBackends) {
			return nil, fmt.Errorf("build table: %w", err)
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
	return p, nil
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

// resolve asks the resolver once per address until the cache is cleared
// (Refresh: neighbours changed; Tick: unresolved next hops, and every
// nextHopTTL), so a reconcile over many VIPs sharing backends does not dump
// the neighbour table once per VIP-backend pair.
func (d *Daemon) resolve(a netip.Addr, onLink bool) (net.HardwareAddr, error) {
	if d.opts.Resolver == nil {
		return zeroMAC, nil
	}
	k := nextHopKey{a, onLink}
	if r, ok := d.nextHops[k]; ok {
		return r.mac, r.err
	}
	mac, err := d.opts.Resolver.Resolve(a, onLink)
	d.nextHops[k] = nextHopResult{mac, err}
	return mac, err
}

type nextHopKey struct {
	addr   netip.Addr
	onLink bool
}

type nextHopResult struct {
	mac net.HardwareAddr
	err error
}

// nextHopTTL bounds how long a resolved next hop is trusted without a
// neighbour event (a route change sends none).
const nextHopTTL = 30 * time.Second

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

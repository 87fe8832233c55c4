package healthd

import (
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/loader"
)

// Status is the whole running state, as `xlb status` shows it. The JSON
// field names are part of the CLI's stable interface.
type Status struct {
	Time  time.Time   `json:"time"` // of the snapshot, by the daemon's clock
	VIPs  []VIPStatus `json:"vips"`
	Error string      `json:"error,omitempty"` // of the last reconcile
}

// VIPStatus is one VIP with its backends.
type VIPStatus struct {
	Address        string          `json:"address"`
	ID             uint32          `json:"id"`
	Mode           string          `json:"mode"`
	Hash           string          `json:"hash"`
	TableSize      uint32          `json:"table_size"`
	PanicThreshold int             `json:"panic_threshold"`
	Panic          bool            `json:"panic"`
	Active         int             `json:"active"`  // active backends
	Healthy        int             `json:"healthy"` // of which healthy
	DrainTimeout   Duration        `json:"drain_timeout"`
	Check          *CheckConfig    `json:"check,omitempty"`
	Packets        uint64          `json:"packets"`
	Bytes          uint64          `json:"bytes"`
	Error          string          `json:"error,omitempty"`
	Backends       []BackendStatus `json:"backends"`
}

// BackendStatus is one backend of a VIP.
type BackendStatus struct {
	Address     string    `json:"address"`
	ID          uint32    `json:"id"`
	Weight      uint32    `json:"weight"`
	Admin       string    `json:"admin"`
	Health      string    `json:"health"` // unknown | healthy | unhealthy | unchecked
	HealthSince time.Time `json:"health_since,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Check       string    `json:"check,omitempty"`
	UsableNew   bool      `json:"usable_new"`
	UsableEst   bool      `json:"usable_established"`
	NextHop     string    `json:"next_hop,omitempty"` // MAC
	NextHopErr  string    `json:"next_hop_error,omitempty"`
	Slots       int       `json:"slots"`
	Share       float64   `json:"share"` // of the table, 0-1
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	PacketRate  float64   `json:"packet_rate"` // per second, over the last sample
	ByteRate    float64   `json:"byte_rate"`
	DrainUntil  time.Time `json:"drain_until,omitzero"`
	// Damped: held down for flapping (Health is then unhealthy).
	Damped bool `json:"damped,omitempty"`
	// History holds the latest check results, oldest first.
	History []check.Result `json:"history,omitempty"`
}

// checkStatuser is implemented by probers that keep per-target state and
// history (healthd/check through proberAdapter).
type checkStatuser interface {
	CheckStatus(id string) (check.Status, bool)
}

// Stats are the datapath counters: per VIP and the drop reasons.
type Stats struct {
	Time    time.Time         `json:"time"`
	Packets uint64            `json:"packets"` // forwarded, all VIPs
	Bytes   uint64            `json:"bytes"`
	VIPs    []VIPCounters     `json:"vips"`
	Drops   map[string]uint64 `json:"drops"`
	Tables  TableStats        `json:"tables"`
}

// VIPCounters are one VIP's counters.
type VIPCounters struct {
	Address string `json:"address"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// TableStats count the Maglev work.
type TableStats struct {
	Builds       uint64  `json:"builds"`        // tables computed (one per distinct backend set)
	Installs     uint64  `json:"installs"`      // tables written to the datapath
	LastDuration float64 `json:"last_duration"` // seconds, of the last reconcile that changed a table
}

// Status returns a snapshot of every VIP and backend.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Time: d.opts.Clock.Now()}
	if d.lastErr != nil {
		st.Error = d.lastErr.Error()
	}
	for _, v := range d.cur.SortedVIPs() {
		vs := VIPStatus{
			Address: v.Key.String(), Mode: v.Mode, Hash: v.Hash, TableSize: v.TableSize,
			PanicThreshold: v.PanicThreshold, DrainTimeout: Duration(v.DrainTimeout), Check: v.Check,
			Backends: []BackendStatus{},
		}
		dv := d.dp.vips[v.Key]
		var counters map[uint32]loader.Counters // by backend ID
		if dv != nil {
			vs.ID, vs.Panic, vs.Active, vs.Healthy, vs.Error = dv.id, dv.panic, dv.active, dv.healthy, dv.err
			if dv.written {
				var total loader.Counters
				var err error
				if total, counters, err = d.vipCounters(dv); err == nil {
					vs.Packets, vs.Bytes = total.Packets, total.Bytes
				}
			}
		}
		for _, b := range v.Backends {
			h, _ := d.healthOf(v, b)
			bs := BackendStatus{
				Address: b.Addr.String(), Weight: b.Weight, Admin: string(b.Admin),
				Health: h.state, HealthSince: h.since, LastError: h.lastErr, Check: b.checkID,
			}
			if b.Admin == Draining {
				bs.DrainUntil = b.DrainStart.Add(b.DrainTimeout)
			}
			if cs, ok := d.opts.Prober.(checkStatuser); ok && b.checkID != "" {
				if st, ok := cs.CheckStatus(b.checkID); ok {
					bs.Damped, bs.History = st.Damped, st.History
				}
			}
			if dv != nil {
				if db := dv.backends[b.Addr]; db != nil {
					bs.ID, bs.NextHopErr = db.id, db.err
					if db.written {
						bs.UsableNew, bs.UsableEst = db.b.UsableNew, db.b.UsableEstablished
						bs.NextHop = db.b.MAC.String()
						if c, ok := counters[db.id]; ok {
							bs.Packets, bs.Bytes = c.Packets, c.Bytes
						}
					}
					if s := db.sample; s != nil {
						bs.PacketRate, bs.ByteRate = s.pps, s.bps
					}
				}
				bs.Slots = dv.slots[b.Addr]
				if v.TableSize > 0 {
					bs.Share = float64(bs.Slots) / float64(v.TableSize)
				}
			}
			vs.Backends = append(vs.Backends, bs)
		}
		st.VIPs = append(st.VIPs, vs)
	}
	if st.VIPs == nil {
		st.VIPs = []VIPStatus{}
	}
	return st
}

// Stats returns the datapath counters.
func (d *Daemon) Stats() (Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Stats{Time: d.opts.Clock.Now(), VIPs: []VIPCounters{}, Tables: d.tableStatsLocked()}
	for _, v := range d.cur.SortedVIPs() {
		dv := d.dp.vips[v.Key]
		if dv == nil || !dv.written {
			continue
		}
		c, _, err := d.vipCounters(dv)
		if err != nil {
			return Stats{}, err
		}
		st.Packets += c.Packets
		st.Bytes += c.Bytes
		st.VIPs = append(st.VIPs, VIPCounters{Address: v.Key.String(), Packets: c.Packets, Bytes: c.Bytes})
	}
	drops, err := d.drops()
	if err != nil {
		return Stats{}, err
	}
	st.Drops = drops
	return st, nil
}

// drops reads the datapath's drop counters by reason.
func (d *Daemon) drops() (map[string]uint64, error) {
	drops, err := d.opts.Datapath.Drops()
	if err != nil {
		return nil, err
	}
	if drops == nil {
		drops = map[string]uint64{}
	}
	return drops, nil
}

// tableStatsLocked counts the Maglev work so far; d.mu is held.
func (d *Daemon) tableStatsLocked() TableStats {
	return TableStats{Builds: d.stats.rebuilds, Installs: d.stats.installs, LastDuration: d.stats.lastDuration.Seconds()}
}

// vipCounters reads the counters of a VIP's written backends, by backend
// ID, and the VIP's total: those plus what its removed backends left (the
// datapath counts per backend only).
func (d *Daemon) vipCounters(dv *dpVIP) (loader.Counters, map[uint32]loader.Counters, error) {
	total, err := d.opts.Datapath.RetiredCounters(dv.id)
	if err != nil {
		return loader.Counters{}, nil, err
	}
	byID := make(map[uint32]loader.Counters, len(dv.backends))
	for _, db := range dv.backends {
		if !db.written {
			continue
		}
		c, err := d.opts.Datapath.BackendCounters(db.id)
		if err != nil {
			return loader.Counters{}, nil, err
		}
		byID[db.id] = c
		total.Packets += c.Packets
		total.Bytes += c.Bytes
	}
	return total, byID, nil
}

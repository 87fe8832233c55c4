package healthd

import (
	"slices"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/loader"
)

// checkStatuser is implemented by probers that keep per-target state and
// history (healthd/check through proberAdapter).
type checkStatuser interface {
	CheckStatus(id string) (check.Status, bool)
}

// Status returns a snapshot of every VIP and backend.
func (d *Daemon) Status() api.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.Status{Time: d.opts.Clock.Now(), Warnings: slices.Clone(d.warnings)}
	if d.lastErr != nil {
		st.Error = d.lastErr.Error()
	}
	st.BGP = d.bgpStatusLocked()
	for _, v := range d.cur.SortedVIPs() {
		vs := api.VIPStatus{
			Address: v.Key.String(), Mode: v.Mode, Hash: v.Hash, Stateless: v.Stateless, TableSize: v.TableSize,
			PanicThreshold: v.PanicThreshold, DrainTimeout: api.Duration(v.DrainTimeout), Check: v.Check,
			Backends: []api.BackendStatus{},
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
			bs := api.BackendStatus{
				Address: b.Addr.String(), Weight: b.Weight, Admin: string(b.Admin),
				Health: h.state, HealthSince: h.since, LastError: h.lastErr, Check: b.checkID,
			}
			if b.Admin == api.Draining {
				bs.DrainUntil = b.DrainStart.Add(b.DrainTimeout)
			}
			if cs, ok := d.opts.Prober.(checkStatuser); ok && b.checkID != "" {
				if st, ok := cs.CheckStatus(b.checkID); ok {
					bs.Damped, bs.History = st.Damped, checkResults(st.History)
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
				bs.Slots = dv.installed.slotsOf(b.Addr)
				if v.TableSize > 0 {
					bs.Share = float64(bs.Slots) / float64(v.TableSize)
				}
			}
			vs.Backends = append(vs.Backends, bs)
		}
		st.VIPs = append(st.VIPs, vs)
	}
	if st.VIPs == nil {
		st.VIPs = []api.VIPStatus{}
	}
	return st
}

// Stats returns the datapath counters.
func (d *Daemon) Stats() (api.Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.Stats{Time: d.opts.Clock.Now(), VIPs: []api.VIPCounters{}, Tables: d.tableStatsLocked()}
	for _, v := range d.cur.SortedVIPs() {
		dv := d.dp.vips[v.Key]
		if dv == nil || !dv.written {
			continue
		}
		c, _, err := d.vipCounters(dv)
		if err != nil {
			return api.Stats{}, err
		}
		st.Packets += c.Packets
		st.Bytes += c.Bytes
		st.VIPs = append(st.VIPs, api.VIPCounters{Address: v.Key.String(), Packets: c.Packets, Bytes: c.Bytes})
	}
	drops, err := d.drops()
	if err != nil {
		return api.Stats{}, err
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
func (d *Daemon) tableStatsLocked() api.TableStats {
	return api.TableStats{Builds: d.stats.rebuilds, Installs: d.stats.installs, Patches: d.stats.patches, LastDuration: d.stats.lastDuration.Seconds()}
}

// checkResults converts the checker's results to the API's own type, so the
// API does not change when the checker does.
func checkResults(rs []check.Result) []api.CheckResult {
	if len(rs) == 0 {
		return nil
	}
	out := make([]api.CheckResult, len(rs))
	for i, r := range rs {
		out[i] = api.CheckResult{Time: r.Time, Latency: r.Latency, Err: r.Err}
	}
	return out
}

// Warn records a condition the operator should fix; Status shows it.
func (d *Daemon) Warn(msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.warnings, msg) {
		d.warnings = append(d.warnings, msg)
	}
}

package healthd

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xlb-project/xlb/healthd/fleet"
	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// FleetReport returns what decides every VIP's table here, with digests,
// for `xlb fleet-check` to compare across balancers.
func (d *Daemon) FleetReport() fleet.Balancer {
	d.mu.Lock()
	defer d.mu.Unlock()
	name, _ := os.Hostname()
	out := fleet.Balancer{Name: name, VIPs: []fleet.VIP{}}
	for _, v := range d.cur.SortedVIPs() {
		fv := fleet.VIP{
			VIP: v.Key.String(), TableSize: v.TableSize, Hash: v.Hash, Stateless: v.Stateless,
			// The daemon runs the datapath with the fixed default seed.
			HashSeed: loader.DefaultHashSeed, Algorithm: maglev.AlgorithmVersion,
			Backends: make([]fleet.Backend, 0, len(v.Backends)), Usable: []string{},
		}
		for _, b := range v.Backends {
			fv.Backends = append(fv.Backends, fleet.Backend{Address: b.Addr.String(), Weight: b.Weight, Admin: string(b.Admin)})
		}
		if dv := d.dp.vips[v.Key]; dv != nil && dv.table {
			var members []string
			var pos []uint32
			if td := d.dp.tables[dv.tableKey]; td != nil {
				for _, a := range td.members {
					members = append(members, a.String())
				}
				pos = td.pos
			}
			fv.Usable = append(fv.Usable, members...)
			slots := make([]string, len(pos))
			for i, p := range pos {
				if int(p) < len(members) {
					slots[i] = members[p]
				}
			}
			fv.Table = fleet.TableDigest(slots)
			fv.Announced = d.announcedLocked(v.Key.Addr) && d.servableOrNoBGPLocked(v)
		}
		fv.Fill()
		out.VIPs = append(out.VIPs, fv)
	}
	return out
}

// servableOrNoBGPLocked is true when v is servable, or when there is no
// BGP (then every balancer receives traffic for every VIP).
func (d *Daemon) servableOrNoBGPLocked(v *VIP) bool {
	return d.bgp == nil || d.notServableLocked(v) == ""
}

var (
	descBGPSession = prometheus.NewDesc("xlb_bgp_session_established", "1 when the BGP session with the peer is established.", []string{"peer"}, nil)
	descBGPRoute   = prometheus.NewDesc("xlb_bgp_announced", "1 when the VIP address is announced (2 with GRACEFUL_SHUTDOWN), 0 when withdrawn.", []string{"address"}, nil)
	descBGPAnn     = prometheus.NewDesc("xlb_bgp_announcements_total", "Routes announced or re-announced with other attributes.", nil, nil)
	descBGPWd      = prometheus.NewDesc("xlb_bgp_withdrawals_total", "Routes withdrawn.", nil, nil)
	descBGPDrained = prometheus.NewDesc("xlb_bgp_drained", "1 after drain-self or while leaving: nothing new is announced.", nil, nil)
)

// bgpCollector exports the BGP state when scraped.
type bgpCollector Daemon

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBGPSession, descBGPRoute, descBGPAnn, descBGPWd, descBGPDrained} {
		ch <- d
	}
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	d := (*Daemon)(c)
	d.mu.Lock()
	st := d.bgpStatusLocked()
	d.mu.Unlock()
	if st == nil {
		return
	}
	for _, s := range st.Sessions {
		v := 0.0
		if s.State == "established" {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPSession, prometheus.GaugeValue, v, s.Peer)
	}
	for _, a := range st.Addresses {
		v := 0.0
		switch {
		case a.Announced && a.GracefulShutdown:
			v = 2
		case a.Announced:
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPRoute, prometheus.GaugeValue, v, a.Address)
	}
	ch <- prometheus.MustNewConstMetric(descBGPAnn, prometheus.CounterValue, float64(st.Announcements))
	ch <- prometheus.MustNewConstMetric(descBGPWd, prometheus.CounterValue, float64(st.Withdrawals))
	drained := 0.0
	if st.Drained || st.Leaving {
		drained = 1
	}
	ch <- prometheus.MustNewConstMetric(descBGPDrained, prometheus.GaugeValue, drained)
}

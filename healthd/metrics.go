package healthd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/xlb-project/xlb/healthd/api"
)

// metrics are the histograms the daemon observes; everything else is read
// from the state when scraped.
type metrics struct {
	reconcile *prometheus.HistogramVec
	check     prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xlb_table_rebuild_duration_seconds",
			Help:    "Time of a reconcile that installed at least one table, from its start to all tables written.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, nil),
		check: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "xlb_health_check_duration_seconds",
			Help:    "Latency of health checks.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 3, 10),
		}),
	}
}

// ObserveCheck records the latency of one health check.
func (d *Daemon) ObserveCheck(latency time.Duration) { d.metrics.check.Observe(latency.Seconds()) }

// Registry returns a Prometheus registry with the daemon's metrics and the
// Go runtime's.
func (d *Daemon) Registry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		d.metrics.reconcile, d.metrics.check, (*collector)(d))
	return r
}

var (
	descVIPPackets = prometheus.NewDesc("xlb_vip_packets_total", "Packets forwarded for a VIP.", []string{"vip"}, nil)
	descVIPBytes   = prometheus.NewDesc("xlb_vip_bytes_total", "Bytes forwarded for a VIP.", []string{"vip"}, nil)
	descVIPPanic   = prometheus.NewDesc("xlb_vip_panic", "1 when the VIP is in panic: too few healthy backends, all active ones serve.", []string{"vip"}, nil)
	descVIPActive  = prometheus.NewDesc("xlb_vip_active_backends", "Backends of the VIP in admin state active.", []string{"vip"}, nil)
	descVIPHealthy = prometheus.NewDesc("xlb_vip_healthy_backends", "Active backends of the VIP that are healthy.", []string{"vip"}, nil)
	descBPackets   = prometheus.NewDesc("xlb_backend_packets_total", "Packets forwarded to a backend of a VIP.", []string{"vip", "backend"}, nil)
	descBBytes     = prometheus.NewDesc("xlb_backend_bytes_total", "Bytes forwarded to a backend of a VIP.", []string{"vip", "backend"}, nil)
	descBHealth    = prometheus.NewDesc("xlb_backend_health", "1 for the backend's current health state (unknown, healthy, unhealthy, unchecked).", []string{"vip", "backend", "state"}, nil)
	descBAdmin     = prometheus.NewDesc("xlb_backend_admin_state", "1 for the backend's admin state (active, draining).", []string{"vip", "backend", "state"}, nil)
	descBWeight    = prometheus.NewDesc("xlb_backend_weight", "Weight of the backend.", []string{"vip", "backend"}, nil)
	descBShare     = prometheus.NewDesc("xlb_backend_table_share", "Share of the VIP's Maglev table slots held by the backend (0-1).", []string{"vip", "backend"}, nil)
	descBResolved  = prometheus.NewDesc("xlb_backend_next_hop_resolved", "1 when the backend's next-hop MAC is resolved.", []string{"vip", "backend"}, nil)
	descDrops      = prometheus.NewDesc("xlb_datapath_drops_total", "Packets that took a non-forwarding exit, by reason.", []string{"reason"}, nil)
	descBuilds     = prometheus.NewDesc("xlb_table_builds_total", "Maglev tables computed (one per distinct backend set).", nil, nil)
	descInstalls   = prometheus.NewDesc("xlb_table_installs_total", "Maglev tables written to the datapath.", nil, nil)
)

// collector reads the daemon's state at scrape time.
type collector Daemon

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVIPPackets, descVIPBytes, descVIPPanic, descVIPActive, descVIPHealthy,
		descBPackets, descBBytes, descBHealth, descBAdmin, descBWeight, descBShare, descBResolved, descDrops, descBuilds, descInstalls} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := (*Daemon)(c)
	st := d.Status()
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, v := range st.VIPs {
		ch <- prometheus.MustNewConstMetric(descVIPPackets, prometheus.CounterValue, float64(v.Packets), v.Address)
		ch <- prometheus.MustNewConstMetric(descVIPBytes, prometheus.CounterValue, float64(v.Bytes), v.Address)
		ch <- prometheus.MustNewConstMetric(descVIPPanic, prometheus.GaugeValue, b2f(v.Panic), v.Address)
		ch <- prometheus.MustNewConstMetric(descVIPActive, prometheus.GaugeValue, float64(v.Active), v.Address)
		ch <- prometheus.MustNewConstMetric(descVIPHealthy, prometheus.GaugeValue, float64(v.Healthy), v.Address)
		for _, b := range v.Backends {
			ch <- prometheus.MustNewConstMetric(descBPackets, prometheus.CounterValue, float64(b.Packets), v.Address, b.Address)
			ch <- prometheus.MustNewConstMetric(descBBytes, prometheus.CounterValue, float64(b.Bytes), v.Address, b.Address)
			for _, s := range []string{HealthUnknown, HealthHealthy, HealthUnhealthy, HealthUnchecked} {
				ch <- prometheus.MustNewConstMetric(descBHealth, prometheus.GaugeValue, b2f(b.Health == s), v.Address, b.Address, s)
			}
			for _, s := range []api.AdminState{api.Active, api.Draining} {
				ch <- prometheus.MustNewConstMetric(descBAdmin, prometheus.GaugeValue, b2f(b.Admin == string(s)), v.Address, b.Address, string(s))
			}
			ch <- prometheus.MustNewConstMetric(descBWeight, prometheus.GaugeValue, float64(b.Weight), v.Address, b.Address)
			ch <- prometheus.MustNewConstMetric(descBShare, prometheus.GaugeValue, b.Share, v.Address, b.Address)
			ch <- prometheus.MustNewConstMetric(descBResolved, prometheus.GaugeValue, b2f(b.NextHop != "" && b.NextHopErr == ""), v.Address, b.Address)
		}
	}
	// Not d.Stats: Status has read the VIP totals already.
	d.mu.Lock()
	drops, err := d.drops()
	ts := d.tableStatsLocked()
	d.mu.Unlock()
	if err == nil {
		for r, n := range drops {
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), r)
		}
	}
	ch <- prometheus.MustNewConstMetric(descBuilds, prometheus.CounterValue, float64(ts.Builds))
	ch <- prometheus.MustNewConstMetric(descInstalls, prometheus.CounterValue, float64(ts.Installs))
}

package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the rate limits' Prometheus collectors; register them on the
// proxy's registry with Collectors.
type Metrics struct {
	decisions   *prometheus.CounterVec // route, limit, result
	redisErrors *prometheus.CounterVec // route, limit
	tables      tableCollector
}

// limitCounters are one limit's children, resolved once so that the hot
// path only increments.
type limitCounters struct {
	outcomes    [outcomes]prometheus.Counter
	redisErrors prometheus.Counter
}

// NewMetrics makes the collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_ratelimit_decisions_total",
			Help: "Rate-limit decisions by route, limit and result (allowed, limited, shadow_limited, denied_missing_key, denied_unknown_key, redis_failed_open, redis_failed_closed).",
		}, []string{"route", "limit", "result"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_ratelimit_redis_errors_total",
			Help: "Rate-limit decisions whose Redis round trip failed or timed out (requests during the backoff that follows included), by route and limit.",
		}, []string{"route", "limit"}),
	}
}

// Collectors returns what to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.decisions, m.redisErrors, &m.tables}
}

var (
	keysDesc = prometheus.NewDesc("xlb_proxy_ratelimit_keys",
		"Keys a limit holds in this proxy's memory (route is empty for a global limit).", []string{"route", "limit"}, nil)
	evictionsDesc = prometheus.NewDesc("xlb_proxy_ratelimit_evictions_total",
		"Keys a full limit forgot before their bucket was full again (max_keys reached).", []string{"route", "limit"}, nil)
)

// tableCollector reports the tables of the Set the metrics belong to, read
// at scrape time.
type tableCollector struct{ set *Set }

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- evictionsDesc
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	if c.set == nil {
		return
	}
	for _, st := range c.set.snapshot() {
		keys, ev := st.local.len(), st.local.evictions.Load()
		if st.redis != nil {
			keys += st.redis.leases.len()
			ev += st.redis.leases.evictions.Load()
		}
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(keys), st.route, st.name)
		ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, float64(ev), st.route, st.name)
	}
}

func (m *Metrics) counters(route, limit string) *limitCounters {
	c := &limitCounters{redisErrors: m.redisErrors.WithLabelValues(route, limit)}
	for i := range c.outcomes {
		c.outcomes[i] = m.decisions.WithLabelValues(route, limit, outcomeNames[i])
	}
	return c
}

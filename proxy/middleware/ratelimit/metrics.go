package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the rate limits' Prometheus collectors; register them on the
// proxy's registry with Collectors.
type Metrics struct {
	decisions   *prometheus.CounterVec // route, limit, result
	redisErrors *prometheus.CounterVec // route, limit
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
	return []prometheus.Collector{m.decisions, m.redisErrors}
}

func (m *Metrics) counters(route, limit string) *limitCounters {
	c := &limitCounters{redisErrors: m.redisErrors.WithLabelValues(route, limit)}
	for i := range c.outcomes {
		c.outcomes[i] = m.decisions.WithLabelValues(route, limit, outcomeNames[i])
	}
	return c
}

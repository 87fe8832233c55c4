package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xlb-project/xlb/proxy/breaker"
)

// resMetrics are the collectors of breakers, retries, fallbacks and load
// shedding.
type resMetrics struct {
	breakerState   *prometheus.GaugeVec   // pool, backend ("" for the pool's breaker)
	breakerChanges *prometheus.CounterVec // pool, backend, to
	retries        *prometheus.CounterVec // route, reason
	budgetOut      *prometheus.CounterVec // route
	fallbacks      *prometheus.CounterVec // route, kind
	shed           *prometheus.CounterVec // pool
	limit          *prometheus.GaugeVec   // pool
}

func newResMetrics(reg *prometheus.Registry) *resMetrics {
	m := &resMetrics{
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xlb_proxy_breaker_state", Help: "Circuit breaker state: 0 closed, 1 open, 2 half-open; backend is empty for a pool's own breaker.",
		}, []string{"pool", "backend"}),
		breakerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_breaker_transitions_total", Help: "Circuit breaker state changes, by the state entered.",
		}, []string{"pool", "backend", "to"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_retry_attempts_total", Help: "Requests sent again after a failed attempt, by route and reason.",
		}, []string{"route", "reason"}),
		budgetOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_retry_budget_exhausted_total", Help: "Retries not made because the route's retry budget was spent.",
		}, []string{"route"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_fallbacks_total", Help: "Requests answered by a route's fallback (last_good, pool, respond) or 503 (none) because its pool had no usable backend.",
		}, []string{"route", "kind"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_shed_total", Help: "Requests answered 503 by a pool's adaptive concurrency limit.",
		}, []string{"pool"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xlb_proxy_concurrency_limit", Help: "A pool's adaptive concurrency limit.",
		}, []string{"pool"}),
	}
	reg.MustRegister(m.breakerState, m.breakerChanges, m.retries, m.budgetOut, m.fallbacks, m.shed, m.limit)
	return m
}

func (m *resMetrics) breakerChange(pool, backend string, to breaker.State) {
	m.breakerState.WithLabelValues(pool, backend).Set(float64(to))
	m.breakerChanges.WithLabelValues(pool, backend, to.String()).Inc()
}

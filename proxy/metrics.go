package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// statusClasses are the label values of the code label; index status/100,
// with 0 for anything outside 100-599.
var statusClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func classIndex(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// metrics are the proxy's Prometheus collectors, on its own registry. The
// children used per request are resolved when a config is compiled, so the
// hot path only increments.
type metrics struct {
	reg *prometheus.Registry

	routeRequests *prometheus.CounterVec   // route, code
	routeDuration *prometheus.HistogramVec // route
	routeRetries  *prometheus.CounterVec   // route
	beRequests    *prometheus.CounterVec   // pool, backend, code
	beDuration    *prometheus.HistogramVec // pool, backend
	beInFlight    *prometheus.GaugeVec     // pool, backend
	beFailures    *prometheus.CounterVec   // pool, backend
	beEjections   *prometheus.CounterVec   // pool, backend
	beHealthy     *prometheus.GaugeVec     // pool, backend
	beDrained     *prometheus.GaugeVec     // pool, backend
	noBackend     *prometheus.CounterVec   // pool
	reloads       *prometheus.CounterVec   // result
	upgraded      prometheus.Gauge
	res           *resMetrics
}

type routeMetrics struct {
	requests [6]prometheus.Counter
	duration prometheus.Observer
	retries  prometheus.Counter
}

type backendMetrics struct {
	requests [6]prometheus.Counter
	duration prometheus.Observer
	inFlight prometheus.Gauge
	failures prometheus.Counter
	ejection prometheus.Counter
	healthy  prometheus.Gauge
	drained  prometheus.Gauge
}

func newMetrics() *metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		routeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_requests_total", Help: "Requests served, by route and status class.",
		}, []string{"route", "code"}),
		routeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "xlb_proxy_request_duration_seconds", Help: "Time from request received to response finished, by route.", Buckets: buckets,
		}, []string{"route"}),
		routeRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_retries_total", Help: "Requests sent again to a backend, by route.",
		}, []string{"route"}),
		beRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_backend_requests_total", Help: "Requests sent to a backend, by status class (other: no response).",
		}, []string{"pool", "backend", "code"}),
		beDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "xlb_proxy_backend_response_seconds", Help: "Time from request sent to response headers (or failure), by backend.", Buckets: buckets,
		}, []string{"pool", "backend"}),
		beInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xlb_proxy_backend_in_flight", Help: "Requests in flight to a backend (upgraded connections included).",
		}, []string{"pool", "backend"}),
		beFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_backend_failures_total", Help: "Requests to a backend that got no response (connect error, timeout, reset).",
		}, []string{"pool", "backend"}),
		beEjections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_backend_ejections_total", Help: "Times a backend was ejected by outlier detection.",
		}, []string{"pool", "backend"}),
		beHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xlb_proxy_backend_healthy", Help: "1 when the backend's health is healthy.",
		}, []string{"pool", "backend"}),
		beDrained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xlb_proxy_backend_drained", Help: "1 when the backend is drained through the admin API.",
		}, []string{"pool", "backend"}),
		noBackend: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_no_backend_total", Help: "Requests answered 503 because no backend of the pool was usable.",
		}, []string{"pool"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xlb_proxy_reloads_total", Help: "Config reloads, by result (ok, error).",
		}, []string{"result"}),
		upgraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xlb_proxy_upgraded_connections", Help: "Open upgraded (WebSocket) client connections.",
		}),
	}
	m.reg.MustRegister(m.routeRequests, m.routeDuration, m.routeRetries, m.beRequests, m.beDuration,
		m.beInFlight, m.beFailures, m.beEjections, m.beHealthy, m.beDrained, m.noBackend, m.reloads, m.upgraded)
	m.res = newResMetrics(m.reg)
	return m
}

func (m *metrics) route(name string) *routeMetrics {
	rm := &routeMetrics{
		duration: m.routeDuration.WithLabelValues(name),
		retries:  m.routeRetries.WithLabelValues(name),
	}
	for i, c := range statusClasses {
		rm.requests[i] = m.routeRequests.WithLabelValues(name, c)
	}
	return rm
}

func (m *metrics) backend(pool, addr string) *backendMetrics {
	bm := &backendMetrics{
		duration: m.beDuration.WithLabelValues(pool, addr),
		inFlight: m.beInFlight.WithLabelValues(pool, addr),
		failures: m.beFailures.WithLabelValues(pool, addr),
		ejection: m.beEjections.WithLabelValues(pool, addr),
		healthy:  m.beHealthy.WithLabelValues(pool, addr),
		drained:  m.beDrained.WithLabelValues(pool, addr),
	}
	for i, c := range statusClasses {
		bm.requests[i] = m.beRequests.WithLabelValues(pool, addr, c)
	}
	return bm
}

// forgetBackend drops the series of a backend no longer configured.
func (m *metrics) forgetBackend(pool, addr string) {
	l := prometheus.Labels{"pool": pool, "backend": addr}
	for _, v := range []*prometheus.MetricVec{m.beRequests.MetricVec, m.beDuration.MetricVec, m.beInFlight.MetricVec,
		m.beFailures.MetricVec, m.beEjections.MetricVec, m.beHealthy.MetricVec, m.beDrained.MetricVec,
		m.res.breakerState.MetricVec, m.res.breakerChanges.MetricVec} {
		v.DeletePartialMatch(l)
	}
}

// forgetRoute drops the series of a route no longer configured.
func (m *metrics) forgetRoute(name string) {
	l := prometheus.Labels{"route": name}
	m.routeRequests.DeletePartialMatch(l)
	m.routeDuration.DeletePartialMatch(l)
	m.routeRetries.DeletePartialMatch(l)
	m.res.retries.DeletePartialMatch(l)
	m.res.budgetOut.DeletePartialMatch(l)
	m.res.fallbacks.DeletePartialMatch(l)
}

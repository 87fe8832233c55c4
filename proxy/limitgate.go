package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xlb-project/xlb/proxy/internal/concurrency"
)

// limitGate is a concurrency limit of a route or pool with what its
// refusal says: the Xlb-Limit value and the refusal counter.
type limitGate struct {
	*concurrency.Gate
	max     int
	header  []string // shared read-only by every refusal
	refused prometheus.Counter
}

// newLimitGate returns the gate of limit (route_max_in_flight or
// pool_max_in_flight) for name, reusing old when its bound is unchanged so
// that requests in flight across a reload stay counted; nil when max is 0.
func (m *metrics) newLimitGate(limit, name string, max int, old *limitGate) *limitGate {
	if max <= 0 {
		return nil
	}
	if old != nil && old.max == max {
		return old
	}
	return &limitGate{
		Gate:    concurrency.NewGate(max),
		max:     max,
		header:  []string{limit + "; name=" + name},
		refused: m.refused.WithLabelValues(limit, name),
	}
}

// enter takes a place, or answers 503 naming the limit and reports false.
func (g *limitGate) enter(w http.ResponseWriter) bool {
	if g == nil || g.Enter() {
		return true
	}
	g.refused.Inc()
	h := w.Header()
	h[concurrency.LimitHeader] = g.header
	h["Retry-After"] = []string{"1"}
	http.Error(w, "too many requests in flight", http.StatusServiceUnavailable)
	return false
}

func (g *limitGate) leave() {
	if g != nil {
		g.Leave()
	}
}

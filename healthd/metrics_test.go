package healthd

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves the daemon's registry and parses the exposition with the
// Prometheus text parser.
func scrape(t *testing.T, d *Daemon) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(d.Registry(), promhttp.HandlerOpts{}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// value finds the sample of a family whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	r := newRig(t, threeBackends)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthUnhealthy)
	r.setHealth("198.51.100.13", HealthUnhealthy)
	r.clock.fire()
	id := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.11").ID
	r.dp.BackendCount[id] = countersOf(42)
	// What removed backends forwarded counts for the VIP too.
	r.dp.Retired[r.vip(t, "203.0.113.10:80/tcp").ID] = countersOf(8)
	r.dp.DropCount["no_backend"] = 7
	fams := scrape(t, r.d)
	vip := map[string]string{"vip": "203.0.113.10:80/tcp"}
	b11 := map[string]string{"vip": "203.0.113.10:80/tcp", "backend": "198.51.100.11"}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"xlb_vip_packets_total", vip, 50},
		{"xlb_vip_bytes_total", vip, 5000},
		{"xlb_vip_panic", vip, 1}, // 1 of 3 healthy < 50%
		{"xlb_vip_active_backends", vip, 3},
		{"xlb_vip_healthy_backends", vip, 1},
		{"xlb_backend_packets_total", b11, 42},
		{"xlb_backend_health", map[string]string{"backend": "198.51.100.11", "state": "healthy"}, 1},
		{"xlb_backend_health", map[string]string{"backend": "198.51.100.12", "state": "unhealthy"}, 1},
		{"xlb_backend_health", map[string]string{"backend": "198.51.100.12", "state": "healthy"}, 0},
		{"xlb_backend_admin_state", map[string]string{"backend": "198.51.100.12", "state": "active"}, 1},
		{"xlb_backend_weight", map[string]string{"backend": "198.51.100.13"}, 2},
		{"xlb_backend_next_hop_resolved", b11, 1},
		{"xlb_datapath_drops_total", map[string]string{"reason": "no_backend"}, 7},
	}
	for _, tt := range tests {
		got, ok := value(fams, tt.name, tt.labels)
		if !ok || got != tt.want {
			t.Errorf("%s%v = %v (found %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	if n, ok := value(fams, "xlb_table_rebuild_duration_seconds", nil); !ok || n == 0 {
		t.Errorf("no table rebuild observed: %v %v", n, ok)
	}
	if n, _ := value(fams, "xlb_table_builds_total", nil); n == 0 {
		t.Error("xlb_table_builds_total is 0")
	}
}

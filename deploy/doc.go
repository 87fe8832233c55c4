// Package deploy holds what an operator deploys next to xlb: the Grafana
// dashboard (grafana/xlb-dashboard.json) and the Prometheus alert rules
// (prometheus/xlb-alerts.yaml, with their promtool unit tests). The Go code
// here is only the test that checks them against the metrics the daemon
// and the proxy export.
package deploy

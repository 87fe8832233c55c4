package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/healthd"
	"github.com/xlb-project/xlb/healthd/healthdtest"
	"github.com/xlb-project/xlb/proxy"
	"github.com/xlb-project/xlb/proxy/config"
)

const (
	dashboardFile = "grafana/xlb-dashboard.json"
	rulesFile     = "prometheus/xlb-alerts.yaml"
	rulesTestFile = "prometheus/xlb-alerts_test.yaml"
)

// family is what the code exports under one metric name.
type family struct {
	kind   dto.MetricType
	labels map[string]bool
}

// daemonFamilies runs a daemon on an in-memory datapath with one VIP, two
// backends, a check result and a drop, and gathers its real registry.
func daemonFamilies(t *testing.T) map[string]family {
	t.Helper()
	dp := healthdtest.NewMemDatapath()
	d, err := healthd.New(healthd.Options{Datapath: dp, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := healthd.ParseConfig([]byte(`
vips:
  - address: 203.0.113.10:80/tcp
    table_size: 251
    check: { kind: tcp, port: 80 }
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12 }
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	d.ObserveCheck(time.Millisecond)
	dp.Lock()
	dp.DropCount["too_big"] = 1
	dp.Unlock()
	mfs, err := d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	return withDescribed(families(mfs), d.Registry())
}

// proxyFamilies builds a proxy with one route and pool, sends requests
// through it (one answered, one with no usable backend), reloads it, and
// reads its real /metrics.
func proxyFamilies(t *testing.T) map[string]family {
	t.Helper()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(be.Close)
	addr := strings.TrimPrefix(be.URL, "http://")
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	text := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: "%s"}]}]
routes: [{name: default, pool: app}]
`, addr)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, proxy.Options{ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	serve := func() int {
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://app.example/", nil))
		return w.Code
	}
	if code := serve(); code != http.StatusOK {
		t.Fatalf("request through the proxy: status %d", code)
	}
	if err := p.Drain("app", addr); err != nil {
		t.Fatal(err)
	}
	if code := serve(); code != http.StatusServiceUnavailable {
		t.Fatalf("request with the only backend drained: status %d, want 503", code)
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.Metrics().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("parse the proxy's /metrics: %v", err)
	}
	var list []*dto.MetricFamily
	for _, mf := range mfs {
		list = append(list, mf)
	}
	return withDescribed(families(list), p.Registry())
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// withDescribed adds the metrics the registry describes but has no series
// of yet (a vector nothing has touched, such as the breakers' of a proxy
// without breakers), with their label names. Their type is unknown, so a
// histogram suffix on them does not resolve; the histograms are all
// observed above.
func withDescribed(fams map[string]family, reg *prometheus.Registry) map[string]family {
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		s := d.String()
		m := descName.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		f, ok := fams[m[1]]
		if !ok {
			f = family{kind: dto.MetricType_UNTYPED, labels: map[string]bool{}}
		}
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, name := range strings.Split(l[1], ",") {
				f.labels[strings.TrimSuffix(strings.TrimPrefix(name, "c("), ")")] = true
			}
		}
		fams[m[1]] = f
	}
	return fams
}

func families(mfs []*dto.MetricFamily) map[string]family {
	out := map[string]family{}
	for _, mf := range mfs {
		f := family{kind: mf.GetType(), labels: map[string]bool{}}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				f.labels[l.GetName()] = true
			}
		}
		out[mf.GetName()] = f
	}
	return out
}

var (
	metricName = regexp.MustCompile(`\bxlb_[a-z0-9_]+`)
	// A selector: name{label="v", label=~"re"} — the labels it matches on.
	selector = regexp.MustCompile(`\b(xlb_[a-z0-9_]+)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

// Labels every series carries from the scrape, not from the code.
var scrapeLabels = map[string]bool{"instance": true, "job": true}

// checkExprs reports each metric or selector label an expression names
// that the code does not export.
func checkExprs(exprs map[string]string, exported map[string]family) []string {
	var problems []string
	for where, expr := range exprs {
		for _, name := range metricName.FindAllString(expr, -1) {
			if _, ok := resolve(name, exported); !ok {
				problems = append(problems, fmt.Sprintf("%s: metric %s is not exported by the daemon or the proxy", where, name))
			}
		}
		for _, m := range selector.FindAllStringSubmatch(expr, -1) {
			f, ok := resolve(m[1], exported)
			if !ok {
				continue
			}
			for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
				l := lm[1]
				if scrapeLabels[l] || (l == "le" && f.kind == dto.MetricType_HISTOGRAM) {
					continue
				}
				if !f.labels[l] {
					problems = append(problems, fmt.Sprintf("%s: metric %s has no label %q", where, m[1], l))
				}
			}
		}
	}
	sort.Strings(problems)
	return slices.Compact(problems)
}

// resolve finds the family of a series name: itself, or a histogram's
// _bucket, _sum or _count.
func resolve(name string, exported map[string]family) (family, bool) {
	if f, ok := exported[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := exported[base]; ok && f.kind == dto.MetricType_HISTOGRAM {
				return f, true
			}
		}
	}
	return family{}, false
}

// dashboardExprs returns every query of the dashboard: panel targets and
// template variables.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("%s: panel %q target %d", dashboardFile, p.Title, i)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			out[fmt.Sprintf("%s: variable %s", dashboardFile, v.Name)] = fmt.Sprint(q["query"])
		}
	}
	return out
}

func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	out := map[string]string{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			out[fmt.Sprintf("%s: alert %s", rulesFile, rule.Alert)] = rule.Expr
		}
	}
	return out
}

// TestDashboardAndRulesUseExportedMetrics: every metric the dashboard and
// the alert rules name, and every label their selectors match on, is
// exported by the code, so renaming a metric fails here. The exported
// names come from the daemon's and the proxy's real registries.
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	exported := daemonFamilies(t)
	for name, f := range proxyFamilies(t) {
		exported[name] = f
	}
	dash, rules := dashboardExprs(t), ruleExprs(t)
	if len(dash) < 20 || len(rules) < 5 {
		t.Fatalf("read %d dashboard queries and %d rules; the files lost their content", len(dash), len(rules))
	}
	for _, set := range []map[string]string{dash, rules} {
		for _, p := range checkExprs(set, exported) {
			t.Error(p)
		}
	}
	// The xlb metrics neither file uses are listed, so that a new metric
	// finds its way to the dashboard.
	used := map[string]bool{}
	for _, set := range []map[string]string{dash, rules} {
		for _, e := range set {
			for _, n := range metricName.FindAllString(e, -1) {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					n = strings.TrimSuffix(n, s)
				}
				used[n] = true
			}
		}
	}
	for name := range exported {
		if strings.HasPrefix(name, "xlb_") && !used[name] {
			t.Errorf("metric %s is exported but neither on the dashboard nor in the rules", name)
		}
	}
}

// TestCheckExprsCatchesRenames: the checker itself reports a renamed metric,
// a histogram suffix on a counter, and a label the metric lacks.
func TestCheckExprsCatchesRenames(t *testing.T) {
	exported := map[string]family{
		"xlb_vip_packets_total":             {kind: dto.MetricType_COUNTER, labels: map[string]bool{"vip": true}},
		"xlb_health_check_duration_seconds": {kind: dto.MetricType_HISTOGRAM, labels: map[string]bool{}},
	}
	got := checkExprs(map[string]string{
		"ok":     `rate(xlb_vip_packets_total{vip="a",instance="i"}[5m]) + rate(xlb_health_check_duration_seconds_bucket{le="1"}[5m])`,
		"rename": `rate(xlb_vip_packet_total[5m])`,
		"suffix": `xlb_vip_packets_total_count`,
		"label":  `xlb_vip_packets_total{backend="x"}`,
	}, exported)
	want := []string{
		`label: metric xlb_vip_packets_total has no label "backend"`,
		"rename: metric xlb_vip_packet_total is not exported by the daemon or the proxy",
		"suffix: metric xlb_vip_packets_total_count is not exported by the daemon or the proxy",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPromtool: the rules load in Prometheus's own checker and pass their
// unit tests (each alert fires on the series that should raise it, and not
// on those that should not).
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is missing (Debian package prometheus; scripts/deps.sh installs it): %v", err)
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		var out bytes.Buffer
		cmd := exec.Command(promtool, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
}

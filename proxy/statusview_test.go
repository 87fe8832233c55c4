package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xlb-project/xlb/internal/statuspage"
	"github.com/xlb-project/xlb/internal/testutil"
)

// TestStatusPage: the proxy serves its status page next to /metrics on
// admin.metrics_address: pools and routes, a drained backend "draining", a
// backend failing its checks "down" with the check's error, requests
// counted; other methods than GET and HEAD are refused and change nothing.
// The page itself is opened in headless Chromium.
func TestStatusPage(t *testing.T) {
	_, a := echoBackend(t, "a")
	srvB, b := echoBackend(t, "b")
	var bFailing atomic.Bool
	srvB.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bFailing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_ = jsonEncode(w, echo{Name: "b"})
	})
	metrics := freeAddr(t)
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
admin: {metrics_address: %q}
pools: [{name: app, backends: [{address: %q}, {address: %q, weight: 3}], health_check: {kind: http, path: /healthz, interval: 50ms, timeout: 50ms, rise: 1, fall: 2}, breaker: {consecutive_failures: 5}}]
routes:
  - {name: health, match: {path: {exact: /healthz}}, respond: {status: 200}}
  - {name: api, match: {hosts: [api.example], path: {prefix: /v1/}}, pool: app}
`, metrics, a, b)
	p, base := startProxy(t, cfg, Options{})
	status := func() statuspage.Answer {
		resp, err := http.Get("http://" + metrics + "/status.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ans statuspage.Answer
		if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	member := func(ans statuspage.Answer, addr string) statuspage.Member {
		for _, g := range ans.Groups {
			for _, m := range g.Members {
				if m.Address == addr {
					return m
				}
			}
		}
		t.Fatalf("backend %s not on the page: %+v", addr, ans.Groups)
		return statuspage.Member{}
	}
	testutil.Eventually(t, 10*time.Second, "both backends up on the page", func() bool {
		ans := status()
		return member(ans, a).State == "up" && member(ans, b).State == "up"
	})
	ans := status()
	if ans.Kind != "l7" || len(ans.Groups) != 1 || ans.Groups[0].Name != "app" || ans.Groups[0].Healthy != 2 {
		t.Fatalf("page: kind %q, groups %+v", ans.Kind, ans.Groups)
	}
	if br := member(ans, a).Breaker; br != "closed" {
		t.Errorf("breaker of a: %q, want closed", br)
	}
	if s := member(ans, b).Share; s != 0.75 {
		t.Errorf("share of b (weight 3 of 4): %v", s)
	}
	if len(ans.Routes) != 2 || ans.Routes[0].Action != "respond 200" || ans.Routes[1].Match != "host api.example; path /v1/*" || ans.Routes[1].Pool != "app" {
		t.Errorf("routes %+v", ans.Routes)
	}
	for range 5 {
		req := mustReq(t, "GET", base+"/v1/x", nil)
		req.Host = "api.example"
		getEcho(t, nil, req)
	}
	testutil.Eventually(t, 5*time.Second, "requests counted", func() bool { return status().Groups[0].Requests == 5 })

	if err := p.Drain("app", a); err != nil {
		t.Fatal(err)
	}
	bFailing.Store(true)
	testutil.Eventually(t, 10*time.Second, "a draining and b down on the page", func() bool {
		ans := status()
		return member(ans, a).State == "draining" && member(ans, b).State == "down"
	})
	if m := member(status(), b); !strings.Contains(m.LastError, "503") || m.HealthSince.IsZero() {
		t.Errorf("b: last error %q, since %v; want the check's 503 and a time", m.LastError, m.HealthSince)
	}

	for _, path := range []string{"/", "/status", "/status.json", "/metrics"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, _ := http.NewRequest(method, "http://"+metrics+path+"?pool=app&address="+a, strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %s, want 405", method, path, resp.Status)
			}
		}
	}
	for _, bi := range p.Backends() {
		if bi.Address == a && !bi.Drained {
			t.Error("a refused request undrained a")
		}
	}

	ctx := testutil.Browser(t, time.Minute, "")
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+metrics+"/status"), chromedp.WaitVisible(chromedp.CSS(`tr.member`))); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{a: "draining", b: "down"} {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr.member[data-member=%q] .state`, "app|"+addr))))
		if err != nil || got != want {
			t.Errorf("browser: %s shows %q (%v), want %q", addr, got, err, want)
		}
	}
	routes, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#routes`)))
	if err != nil || !strings.Contains(routes, "host api.example; path /v1/*") {
		t.Errorf("browser: routes %q (%v)", routes, err)
	}
}

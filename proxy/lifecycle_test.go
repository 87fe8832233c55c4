package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/healthd/check/checktest"
	"github.com/xlb-project/xlb/proxy/admin"
	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/middleware"
)

func TestWeightedBalancing(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, algorithm: weighted_round_robin, backends: [{address: %q, weight: 1}, {address: %q, weight: 3}]}]
routes: [{name: all, pool: app}]
`, a, b)
	_, base := startProxy(t, cfg, Options{})
	counts := map[string]int{}
	for i := 0; i < 40; i++ {
		_, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
		counts[e.Name]++
	}
	if counts["a"] != 10 || counts["b"] != 30 {
		t.Errorf("weighted 1:3 over 40 requests: %v", counts)
	}
}

// blockingBackend answers /slow only when release is closed, reporting its
// name on started first; other paths answer at once; /ws echoes WebSocket.
func blockingBackend(t *testing.T, name string, started chan<- string, release <-chan struct{}) string {
	srv, addr := echoBackend(t, name)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			started <- name
			<-release
		case "/ws":
			wsEcho(w, r)
			return
		}
		w.Header().Set("X-Backend", name)
		_ = jsonEncode(w, echo{Name: name})
	})
	return addr
}

func TestDrainWithInFlightAndWebSocket(t *testing.T) {
	started := make(chan string, 4)
	release := make(chan struct{})
	addrs := map[string]string{
		"a": blockingBackend(t, "a", started, release),
		"b": blockingBackend(t, "b", started, release),
	}
	sock := filepath.Join(t.TempDir(), "admin.sock")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
drain_timeout: 100ms
admin: {socket: %q}
pools: [{name: app, backends: [{address: %q}, {address: %q}]}]
routes: [{name: all, pool: app}]
`, sock, addrs["a"], addrs["b"])
	_, base := startProxy(t, cfg, Options{})
	client := admin.NewClient(sock)
	ctx := context.Background()

	// One request in flight; find out where it went.
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	victim := <-started
	other := map[string]string{"a": "b", "b": "a"}[victim]

	// WebSockets on both backends (round robin: two dials cover both).
	ws := map[string]*bufio.Reader{}
	for len(ws) < 2 {
		c, br := wsDial(t, base)
		defer c.Close()
		list, err := client.Backends(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, bi := range list {
			name := map[string]string{addrs["a"]: "a", addrs["b"]: "b"}[bi.Address]
			if bi.Upgraded > 0 && ws[name] == nil {
				ws[name] = br
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				break
			}
		}
	}

	if err := client.Drain(ctx, "app", addrs[victim]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		_, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
		if e.Name != other {
			t.Fatalf("request %d after drain went to %q, want %q", i, e.Name, other)
		}
	}
	list, _ := client.Backends(ctx)
	for _, bi := range list {
		// In flight: the slow request and the WebSocket.
		if bi.Address == addrs[victim] && (!bi.Drained || bi.InFlight != 2 || bi.Upgraded != 1) {
			t.Errorf("drained backend listed as %+v", bi)
		}
	}
	close(release)
	if code := <-inflight; code != 200 {
		t.Errorf("in-flight request finished with %d, want 200", code)
	}
	// The drained backend's WebSocket is closed after drain_timeout; the
	// other one still echoes.
	if _, err := ws[victim].ReadByte(); !errors.Is(err, io.EOF) && !strings.Contains(fmt.Sprint(err), "closed") {
		t.Errorf("WebSocket to drained backend: read returned %v, want EOF", err)
	}
	if err := client.Drain(ctx, "app", "127.0.0.1:1"); !errors.Is(err, ErrNoBackend) {
		t.Errorf("drain unknown backend: %v, want ErrNoBackend", err)
	}
	if err := client.Undrain(ctx, "app", addrs[victim]); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		_, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
		seen[e.Name] = true
	}
	if !seen[victim] {
		t.Errorf("undrained backend gets no requests: %v", seen)
	}
}

func TestHotReloadUnderLoad(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	_, c := echoBackend(t, "c")
	srvWS, ws := echoBackend(t, "ws")
	srvWS.Config.Handler = http.HandlerFunc(wsEcho)
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	cfgs := []string{
		fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - {name: app, backends: [{address: %q}, {address: %q}]}
  - {name: ws, backends: [{address: %q}]}
routes: [{name: ws, match: {path: {exact: /ws}}, pool: ws}, {name: all, pool: app}]
`, a, b, ws),
		fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - {name: app, algorithm: least_conn, backends: [{address: %q}, {address: %q}]}
  - {name: ws, backends: [{address: %q}]}
routes: [{name: ws, match: {path: {exact: /ws}}, pool: ws}, {name: other, match: {path: {prefix: /x}}, respond: {body: x}}, {name: all, pool: app}]
`, b, c, ws),
	}
	if err := os.WriteFile(path, []byte(cfgs[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	p, base := startProxy(t, cfgs[0], Options{ConfigPath: path})

	wsConn, wsBR := wsDial(t, base)
	defer wsConn.Close()

	var failures, ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(base + "/")
				if err != nil {
					failures.Add(1)
					t.Logf("request failed: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
					t.Logf("status %d", resp.StatusCode)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(path, []byte(cfgs[(i+1)%2]), 0o600); err != nil {
			t.Fatal(err)
		}
		before := ok.Load()
		if err := p.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		waitFor(t, "a request served after the reload", func() bool { return ok.Load() > before })
	}
	// An invalid config is rejected and the running one stays.
	if err := os.WriteFile(path, []byte("listeners: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err == nil || !errors.Is(err, config.ErrConfig) {
		t.Errorf("invalid reload: %v, want config.ErrConfig", err)
	}
	before := ok.Load()
	waitFor(t, "requests served after the refused reload", func() bool { return ok.Load() > before+2 })
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d requests failed during reloads (%d ok)", failures.Load(), ok.Load())
	}
	// The WebSocket opened before the reloads is still up.
	if _, err := io.WriteString(wsConn, "ping"); err != nil {
		t.Fatal(err)
	}
	_ = wsConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(wsBR, buf); err != nil || string(buf) != "ping" {
		t.Errorf("WebSocket after reloads: %q %v", buf, err)
	}
	// The last good config (cfgs[0] after 20 reloads) is still in force.
	if got := len(p.Backends()); got != 3 {
		t.Errorf("backends after rejected reload: %d, want 3", got)
	}
}

func TestHealthDefinedBeforeFirstCheck(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	clock := checktest.NewClock(time.Unix(1e9, 0)) // never advanced: no check completes
	mk := func(extra string, addrs ...string) *config.Config {
		var bs []string
		for _, x := range addrs {
			bs = append(bs, fmt.Sprintf("{address: %q}", x))
		}
		c, err := config.Parse([]byte(fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [%s], health_check: {kind: http, path: /healthz%s}}]
routes: [{name: all, pool: app}]
`, strings.Join(bs, ", "), extra)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p, base := startProxy(t, "listeners: [{name: web, address: \"127.0.0.1:0\"}]\npools: [{name: app, backends: [{address: \""+a+"\"}], health_check: {kind: http, start_healthy: true}}]\nroutes: [{name: all, pool: app}]\n", Options{HealthClock: clock})
	if _, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil)); e.Name != "a" {
		t.Fatalf("start_healthy backend not used: %q", e.Name)
	}
	// b is added by a reload without start_healthy: unknown, so unused,
	// while a keeps its state.
	if err := p.Apply(mk(", start_healthy: false", a, b)); err != nil {
		t.Fatal(err)
	}
	for _, bi := range p.Backends() {
		want := map[string]string{a: "healthy", b: "unknown"}[bi.Address]
		if bi.Health != want {
			t.Errorf("%s health %s, want %s", bi.Address, bi.Health, want)
		}
	}
	for i := 0; i < 6; i++ {
		if _, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil)); e.Name != "a" {
			t.Fatalf("request went to %q before its first check", e.Name)
		}
	}
}

func TestActiveHealthChecks(t *testing.T) {
	_, a := echoBackend(t, "a")
	srvB, b := echoBackend(t, "b")
	var bHealthy atomic.Bool
	srvB.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && !bHealthy.Load() {
			w.WriteHeader(500)
			return
		}
		w.Header().Set("X-Backend", "b")
		_ = jsonEncode(w, echo{Name: "b"})
	})
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}, {address: %q}], health_check: {kind: http, path: /healthz, interval: 50ms, timeout: 50ms, rise: 1, fall: 3}}]
routes: [{name: all, pool: app}]
`, a, b)
	p, base := startProxy(t, cfg, Options{})
	health := func() map[string]string {
		out := map[string]string{}
		for _, bi := range p.Backends() {
			out[bi.Address] = bi.Health
		}
		return out
	}
	waitFor(t, "a healthy, b unhealthy", func() bool { h := health(); return h[a] == "healthy" && h[b] == "unhealthy" })
	for i := 0; i < 6; i++ {
		if _, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil)); e.Name != "a" {
			t.Fatalf("request went to unhealthy %q", e.Name)
		}
	}
	bHealthy.Store(true)
	waitFor(t, "b healthy", func() bool { return health()[b] == "healthy" })
}

func TestMetricsAccessLogAndMiddleware(t *testing.T) {
	_, a := echoBackend(t, "a")
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	logPath := filepath.Join(dir, "access.log")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
admin: {socket: %q}
access_log: {path: %q}
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - name: tagged
    pool: app
    middleware:
      - {kind: tag, config: {value: outer}}
      - {kind: tag, config: {value: inner}}
`, sock, logPath, a)
	opts := Options{Middleware: map[string]middleware.Factory{
		"tag": func(route string, n *yaml.Node) (middleware.Middleware, error) {
			var c struct {
				Value string `yaml:"value"`
			}
			if err := n.Decode(&c); err != nil {
				return nil, err
			}
			return func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					r.Header.Add("X-Chain", c.Value)
					w.Header().Add("X-Chain-Resp", c.Value)
					next.ServeHTTP(w, r)
				})
			}, nil
		},
	}}
	_, base := startProxy(t, cfg, opts)
	req := mustReq(t, "GET", base+"/p?q=1", nil)
	req.Header.Set("X-Request-Id", "rid-1")
	resp, e := getEcho(t, nil, req)
	if got := strings.Join(e.Header["X-Chain"], ","); got != "outer,inner" {
		t.Errorf("middleware order: backend saw X-Chain %q, want outer,inner", got)
	}
	if resp.Header.Get("X-Chain-Resp") == "" {
		t.Errorf("middleware response header missing")
	}

	// Metrics over the admin socket.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	mresp, err := hc.Get("http://proxy/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`xlb_proxy_requests_total{code="2xx",route="tagged"} 1`,
		fmt.Sprintf(`xlb_proxy_backend_requests_total{backend=%q,code="2xx",pool="app"} 1`, a),
		`xlb_proxy_request_duration_seconds_count{route="tagged"} 1`,
		fmt.Sprintf(`xlb_proxy_backend_in_flight{backend=%q,pool="app"} 0`, a),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// One JSON access log line with the request's facts.
	var line map[string]any
	waitFor(t, "access log line", func() bool {
		data, _ := os.ReadFile(logPath)
		return json.Unmarshal(data, &line) == nil
	})
	want := map[string]any{"request_id": "rid-1", "route": "tagged", "backend": a, "status": float64(200), "path": "/p", "method": "GET", "client": "127.0.0.1"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if line["bytes"].(float64) <= 0 || line["duration_ms"] == nil {
		t.Errorf("access log bytes/duration: %v", line)
	}

	// An unknown middleware kind is a config error.
	c, _ := config.Parse([]byte(strings.ReplaceAll(cfg, "kind: tag, config: {value: inner}", "kind: nope")))
	if _, err := New(c, opts); err == nil || !strings.Contains(err.Error(), `middleware[1].kind "nope"`) {
		t.Errorf("unknown middleware: %v", err)
	}
}

func TestAdminReloadWithoutFile(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	_, a := echoBackend(t, "a")
	startProxy(t, oneBackendConfig(a, fmt.Sprintf("admin: {socket: %q}", sock)), Options{})
	err := admin.NewClient(sock).Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), ErrNoConfigPath.Error()) {
		t.Errorf("reload without file: %v", err)
	}
}

func TestReloadListeners(t *testing.T) {
	_, a := echoBackend(t, "a")
	base := fmt.Sprintf(`
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
listeners:
  - {name: web, address: "127.0.0.1:0"}
`, a)
	p, webURL := startProxy(t, base, Options{})
	two, err := config.Parse([]byte(base + `  - {name: extra, address: "127.0.0.1:0"}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(two); err != nil {
		t.Fatal(err)
	}
	extra := p.Addrs()["extra"]
	if extra == nil {
		t.Fatal("added listener not running")
	}
	for _, u := range []string{webURL, "http://" + extra.String()} {
		if _, e := getEcho(t, nil, mustReq(t, "GET", u+"/", nil)); e.Name != "a" {
			t.Errorf("%s: backend %q", u, e.Name)
		}
	}
	// The first listener kept its socket.
	if got := p.Addrs()["web"].String(); "http://"+got != webURL {
		t.Errorf("web listener moved from %s to %s", webURL, got)
	}
	one, _ := config.Parse([]byte(base))
	if err := p.Apply(one); err != nil {
		t.Fatal(err)
	}
	if p.Addrs()["extra"] != nil {
		t.Error("removed listener still listed")
	}
	waitFor(t, "removed listener closed", func() bool {
		resp, err := http.Get("http://" + extra.String() + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
}

func TestGracefulShutdown(t *testing.T) {
	started := make(chan string, 1)
	release := make(chan struct{})
	a := blockingBackend(t, "a", started, release)
	c, err := config.Parse([]byte(oneBackendConfig(a, "shutdown_timeout: 10s\ndrain_timeout: 100ms")))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "listener", func() bool { return p.Addrs()["web"] != nil })
	base := "http://" + p.Addrs()["web"].String()
	ws, wsBR := wsDial(t, base)
	defer ws.Close()

	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-started
	cancel()
	// New connections are refused while the request in flight goes on.
	waitFor(t, "listener closed", func() bool {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	// The upgraded connection is closed after drain_timeout.
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := wsBR.ReadByte(); err == nil {
		t.Error("WebSocket still open during shutdown")
	}
	close(release)
	if code := <-inflight; code != 200 {
		t.Errorf("in-flight request during shutdown: %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("proxy did not stop")
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	c, err := config.Parse([]byte(fmt.Sprintf(`
listeners: [{name: web, address: %q}]
pools: [{name: app, backends: [{address: "127.0.0.1:1"}]}]
routes: [{name: all, pool: app}]
`, busy.Addr().String())))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("run on a busy port: %v", err)
	}
}

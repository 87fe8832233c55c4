package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/proxy/admin"
	"github.com/xlb-project/xlb/proxy/config"
)

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func scrape(addr string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestAdminSettingsFollowReload: a reload that changes admin.socket and
// admin.metrics_address serves them at the new places and stops serving at
// the old ones; one whose new address cannot be listened on is refused,
// naming the key, and the old settings keep working.
func TestAdminSettingsFollowReload(t *testing.T) {
	_, be := echoBackend(t, "a")
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	sock1, sock2 := filepath.Join(dir, "one.sock"), filepath.Join(dir, "two.sock")
	met1, met2 := freeAddr(t), freeAddr(t)
	cfgWith := func(sock, met string) string {
		return oneBackendConfig(be, fmt.Sprintf("admin: {socket: %q, metrics_address: %q}", sock, met))
	}
	write := func(cfg string) {
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfgWith(sock1, met1))
	startProxy(t, cfgWith(sock1, met1), Options{ConfigPath: path})
	ctx := context.Background()
	if _, err := scrape(met1); err != nil {
		t.Fatalf("metrics at %s: %v", met1, err)
	}

	// The reload is asked through the socket it moves.
	write(cfgWith(sock2, met2))
	if err := admin.NewClient(sock1).Reload(ctx); err != nil {
		t.Fatalf("reload moving the admin socket: %v", err)
	}
	if _, err := admin.NewClient(sock2).Backends(ctx); err != nil {
		t.Errorf("admin API at the new socket: %v", err)
	}
	waitFor(t, "the old socket to go", func() bool {
		_, err := admin.NewClient(sock1).Backends(ctx)
		return err != nil
	})
	if _, err := os.Stat(sock1); !os.IsNotExist(err) {
		t.Errorf("old socket file left: %v", err)
	}
	if _, err := scrape(met2); err != nil {
		t.Errorf("metrics at the new address %s: %v", met2, err)
	}
	waitFor(t, "the old metrics address to close", func() bool {
		_, err := scrape(met1)
		return err != nil
	})

	// A metrics address in use: refused, naming the key; nothing changes.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sock3 := filepath.Join(dir, "three.sock")
	write(cfgWith(sock3, busy.Addr().String()))
	err = admin.NewClient(sock2).Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "admin.metrics_address") {
		t.Fatalf("reload onto a busy metrics address: %v, want an error naming admin.metrics_address", err)
	}
	if _, err := os.Stat(sock3); !os.IsNotExist(err) {
		t.Errorf("refused reload left socket %s: %v", sock3, err)
	}
	if _, err := admin.NewClient(sock2).Backends(ctx); err != nil {
		t.Errorf("admin API after the refused reload: %v", err)
	}
	if _, err := scrape(met2); err != nil {
		t.Errorf("metrics after the refused reload: %v", err)
	}
}

// TestFailedReloadChangesNothing: a config that fails after its pools are
// built (an unregistered middleware, an admin address in use) leaves
// health-check specs, outlier membership and metric series as they were.
func TestFailedReloadChangesNothing(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	pool := func(backends, path string) string {
		return fmt.Sprintf(`pools:
  - name: app
    backends: [%s]
    health_check: {path: %s, interval: 1h, start_healthy: true}
    outlier: {consecutive_failures: 3}
`, backends, path)
	}
	good := `
listeners: [{name: web, address: "127.0.0.1:0"}]
` + pool(fmt.Sprintf("{address: %q}", a), "/health") + `routes: [{name: all, pool: app}]
`
	p, _ := startProxy(t, good, Options{})
	bad := map[string]string{
		"unregistered middleware": `
listeners: [{name: web, address: "127.0.0.1:0"}]
` + pool(fmt.Sprintf("{address: %q}, {address: %q}", a, b), "/other") + `routes: [{name: all, pool: app, middleware: [{kind: nope}]}]
`,
		"admin address in use": fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
admin: {metrics_address: %q}
`, busy.Addr().String()) + pool(fmt.Sprintf("{address: %q}, {address: %q}", a, b), "/other") + `routes: [{name: all, pool: app}, {name: extra, pool: app}]
`,
	}
	for name, cfg := range bad {
		c, err := config.Parse([]byte(cfg))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := p.Apply(c); err == nil {
			t.Fatalf("%s: applied", name)
		}
		p.mu.Lock()
		ba := p.backends["app/"+a]
		n := len(p.backends)
		p.mu.Unlock()
		if spec := ba.spec.Load(); spec == nil || spec.Path != "/health" {
			t.Errorf("%s: health check of %s now %+v, want path /health", name, a, spec)
		}
		if n != 1 {
			t.Errorf("%s: %d backends registered, want 1", name, n)
		}
		if st := p.state.Load().pools["app"].detector.Statuses(time.Now()); len(st) != 1 || st[0].Backend != a {
			t.Errorf("%s: outlier detection tracks %+v, want only %s", name, st, a)
		}
		rec := httptest.NewRecorder()
		p.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if m := rec.Body.String(); strings.Contains(m, b) || strings.Contains(m, `route="extra"`) {
			t.Errorf("%s: metric series of the refused config appeared", name)
		}
	}
}

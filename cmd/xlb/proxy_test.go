package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/proxy"
	proxyadmin "github.com/xlb-project/xlb/proxy/admin"
	proxyconfig "github.com/xlb-project/xlb/proxy/config"
)

func TestProxyUsageErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"proxy"}, "--config FILE is required"},
		{[]string{"proxy", "frob"}, `unknown verb "frob"`},
		{[]string{"proxy", "backend"}, "needs list, drain or undrain"},
		{[]string{"proxy", "backend", "drain", "app"}, "needs POOL ADDR"},
		{[]string{"proxy", "backend", "drain", "app", "nope"}, `ADDR "nope": allowed is host:port`},
		{[]string{"proxy", "--config", "../../testdata/proxy/invalid/no-routes.yaml"}, "at least one route is required"},
		{[]string{"proxy", "--config", "x.yaml", "--log-level", "loud"}, `--log-level "loud"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want failure containing %q", code, stderr, tc.wantErr)
			}
		})
	}
}

func TestProxyCheckConfig(t *testing.T) {
	code, stdout, stderr := runCLI(t, "proxy", "--config", "../../testdata/proxy/example.yaml", "--check-config")
	if code != 0 || !strings.Contains(stdout, "ok (1 listeners, 2 pools, 5 routes)") {
		t.Errorf("check example: %d %q %q", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "proxy", "--config", "../../testdata/proxy/invalid/bad-regex.yaml", "--check-config")
	if code != 1 || !strings.Contains(stderr, "must be a Go regular expression") {
		t.Errorf("check invalid: %d %q", code, stderr)
	}
}

func TestProxyBackendVerbs(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	addr := strings.TrimPrefix(be.URL, "http://")
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	cfgPath := filepath.Join(dir, "proxy.yaml")
	cfgText := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
admin: {socket: %q}
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, sock, addr)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := proxyconfig.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, proxy.Options{ConfigPath: cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("admin socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}

	list := func() []proxyadmin.BackendInfo {
		code, stdout, stderr := runCLI(t, "proxy", "backend", "list", "--socket", sock, "-o", "json")
		if code != 0 {
			t.Fatalf("list: %d %s", code, stderr)
		}
		var out []proxyadmin.BackendInfo
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("list json %q: %v", stdout, err)
		}
		return out
	}
	if l := list(); len(l) != 1 || l[0].Address != addr || l[0].Drained {
		t.Fatalf("list: %+v", l)
	}
	if code, _, stderr := runCLI(t, "proxy", "backend", "drain", "app", addr, "--config", cfgPath); code != 0 {
		t.Fatalf("drain: %s", stderr)
	}
	if l := list(); !l[0].Drained {
		t.Fatalf("not drained: %+v", l)
	}
	code, stdout, _ := runCLI(t, "proxy", "backend", "list", "--socket", sock)
	if code != 0 || !strings.Contains(stdout, "DRAINED") || !strings.Contains(stdout, "true") {
		t.Errorf("table: %q", stdout)
	}
	if code, _, stderr := runCLI(t, "proxy", "backend", "undrain", "app", addr, "--socket", sock); code != 0 {
		t.Fatalf("undrain: %s", stderr)
	}
	if l := list(); l[0].Drained {
		t.Fatalf("still drained: %+v", l)
	}
	if code, _, stderr := runCLI(t, "proxy", "backend", "drain", "app", "127.0.0.1:1", "--socket", sock); code != 1 || !strings.Contains(stderr, "no such backend") {
		t.Errorf("drain unknown: %d %q", code, stderr)
	}
	if code, stdout, stderr := runCLI(t, "proxy", "reload", "--socket", sock); code != 0 || !strings.Contains(stdout, "reloaded") {
		t.Errorf("reload: %d %q %q", code, stdout, stderr)
	}
}

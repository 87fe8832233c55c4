package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigForms: every form of --check-config for both components, the
// exit codes (0 valid, 1 invalid config, 2 malformed command line) and the
// line of the error. The configs shipped in the Debian package are checked
// here too, so a config change that breaks them fails before packaging.
func TestCheckConfigForms(t *testing.T) {
	dir := t.TempDir()
	badDaemon := filepath.Join(dir, "bad-xlb.yaml")
	if err := os.WriteFile(badDaemon, []byte("interface: eth0\nvips:\n  - address: 203.0.113.1:80/tcp\n    table_size: 1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badProxy := filepath.Join(dir, "bad-proxy.yaml")
	if err := os.WriteFile(badProxy, []byte("listeners:\n  - name: web\n    address: 127.0.0.1:8080\n    idle_timeout: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const (
		daemonOK = "../../testdata/xlb.yaml"
		proxyOK  = "../../testdata/proxy/example.yaml"
	)
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{[]string{"daemon", "--check-config", daemonOK}, 0, "ok: 2 VIPs", ""},
		{[]string{"daemon", "--check-config=" + daemonOK}, 0, "ok: 2 VIPs", ""},
		{[]string{"daemon", "--check-config", "--config", daemonOK}, 0, "ok: 2 VIPs", ""},
		{[]string{"daemon", "--config", daemonOK, "--check-config", daemonOK}, 0, "ok: 2 VIPs", ""},
		{[]string{"daemon", "--check-config", "../../packaging/etc/xlb.yaml"}, 0, "ok: 0 VIPs, interface eth0", ""},
		{[]string{"daemon", "--check-config", badDaemon}, 1, "", "line 4: vips[0].table_size: 1000 is not a prime"},
		{[]string{"daemon", "--check-config", filepath.Join(dir, "missing.yaml")}, 1, "", "no such file"},
		{[]string{"daemon", "--check-config"}, 2, "", "--check-config needs the configuration"},
		{[]string{"daemon", "--check-config", "a.yaml", "b.yaml"}, 2, "", `unexpected argument "b.yaml"`},
		{[]string{"daemon", "--check-config", daemonOK, "--config", badDaemon}, 2, "", "name different files"},
		{[]string{"daemon", "--check-config", daemonOK, "--cleanup"}, 2, "", "exclude each other"},
		{[]string{"proxy", "--check-config", proxyOK}, 0, "ok (1 listeners, 2 pools, 5 routes)", ""},
		{[]string{"proxy", "--check-config=" + proxyOK}, 0, "ok (1 listeners", ""},
		{[]string{"proxy", "--config", proxyOK, "--check-config"}, 0, "ok (1 listeners", ""},
		{[]string{"proxy", "--check-config", "../../packaging/etc/proxy.yaml"}, 0, "ok (1 listeners, 1 pools, 1 routes)", ""},
		{[]string{"proxy", "--check-config", badProxy}, 1, "", `line 4: duration "soon"`},
		{[]string{"proxy", "--check-config"}, 2, "", "--check-config needs the configuration"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout, stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

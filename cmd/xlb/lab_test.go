package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// Bad input to the lab and backend-host verbs: one line naming the flag,
// the value and what is allowed, exit code 2, and nothing touched (every
// case fails before a namespace, address or sysctl is changed).
func TestLabAndBackendHostUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"lab", "up", "--backends", "0"}, "--backends 0: allowed are 1 to 89"},
		{[]string{"lab", "up", "--backends", "100"}, "--backends 100: allowed are 1 to 89"},
		{[]string{"lab", "up", "--balancers", "9"}, "--balancers 9: allowed are 1 to 8"},
		{[]string{"lab", "up", "--mode", "nat"}, `--mode "nat": allowed are ipip, l2dsr`},
		{[]string{"lab", "up", "--check-interval", "1ms"}, "--check-interval 1ms: allowed is 100ms or more"},
		{[]string{"lab", "up", "extra"}, `unexpected argument "extra"`},
		{[]string{"lab", "up", "--l7", "--routed"}, "--l7: not supported with --routed"},
		{[]string{"lab", "up", "--l7", "--l7-rate", "0"}, "--l7-rate 0: allowed are 1 to 1000000"},
		{[]string{"lab", "up", "--l7", "--l7-burst", "2000000"}, "--l7-burst 2000000: allowed are 1 to 1000000"},
		{[]string{"lab", "up", "--l7-redis"}, "--l7-redis: needs --l7"},
		{[]string{"lab", "down", "extra"}, `unexpected argument "extra"`},
		{[]string{"lab", "traffic", "--vip", "203.0.113.10"}, `--vip "203.0.113.10": allowed is ADDR:PORT`},
		{[]string{"lab", "traffic", "--rate", "0"}, "--rate 0: allowed are 1 to 2000"},
		{[]string{"lab", "server", "stop"}, "needs one BACKEND"},
		{[]string{"lab", "serve"}, "--name: required"},
		{[]string{"lab", "serve", "--name", "be1", "--echo-port", "70000"}, "--echo-port 70000: allowed are 1 to 65535"},
		{[]string{"backend-host", "setup", "--vip", "203.0.113.10"}, "--iface: required"},
		{[]string{"backend-host", "setup", "--iface", "eth0"}, "--vip: at least one VIP address is required"},
		{[]string{"backend-host", "setup", "--iface", "eth0", "--vip", "203.0.113.300", "--state-file", missing}, `--vip "203.0.113.300": allowed are IPv4 or IPv6 addresses`},
		{[]string{"backend-host", "teardown", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runCLI(t, tt.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stderr %q)", code, errOut)
			}
			if !strings.Contains(errOut, tt.wantErr) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("stderr %q, want one line containing %q", errOut, tt.wantErr)
			}
		})
	}
}

// A lab command without a lab says how to get one.
func TestLabShowWithoutLab(t *testing.T) {
	code, _, errOut := runCLI(t, "lab", "show", "--state-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "run 'xlb lab up'") {
		t.Errorf("exit %d, stderr %q; want 1 and a hint to run 'xlb lab up'", code, errOut)
	}
}

// Teardown with no state file has nothing to undo.
func TestBackendHostTeardownNothingToDo(t *testing.T) {
	code, out, errOut := runCLI(t, "backend-host", "teardown", "--state-file", filepath.Join(t.TempDir(), "none.json"))
	if code != 0 || !strings.Contains(out, "torn down") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

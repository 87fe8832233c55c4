// Package testutil holds helpers shared by the tests: the guard for tests that
// need root and BPF, and network namespaces that clean up after themselves.
package testutil

import (
	"os"
	"testing"
)

// RequirePrivilegedEnv names the variable that turns a privileged test's skip
// into a failure. CI sets it, so a missing capability cannot turn CI green.
const RequirePrivilegedEnv = "XLB_REQUIRE_PRIVILEGED"

// RequirePrivileged skips the test when the process cannot load BPF programs
// or manage network namespaces (not root, or no bpf syscall), and fails it
// instead when XLB_REQUIRE_PRIVILEGED=1.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if reason := privilegeMissing(); reason != "" {
		if os.Getenv(RequirePrivilegedEnv) == "1" {
			tb.Fatalf("privileged test cannot run (%s) but %s=1", reason, RequirePrivilegedEnv)
		}
		tb.Skipf("skipped: %s (run as root; set %s=1 to make this a failure)", reason, RequirePrivilegedEnv)
	}
}

func privilegeMissing() string {
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "kernel has no BTF (/sys/kernel/btf/vmlinux missing)"
	}
	if _, err := os.Stat("/proc/sys/net/core/bpf_jit_enable"); err != nil {
		return "kernel has no BPF JIT"
	}
	return ""
}

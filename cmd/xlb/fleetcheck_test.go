package main

import (
	"strings"
	"testing"
)

// Bad command lines are refused before any balancer is contacted.
func TestFleetCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"fleet-check"}, 2, "--peer: 0 given, at least two balancers are needed"},
		{[]string{"fleet-check", "--peer", "/run/a.sock"}, 2, "--peer: 1 given"},
		{[]string{"fleet-check", "--peer", "a.sock", "--peer", "/run/b.sock"}, 2, `"a.sock": allowed are an absolute socket path or an http:// URL`},
		{[]string{"fleet-check", "--peer", "/nonexistent/a.sock", "--peer", "/nonexistent/b.sock"}, 1, "peer /nonexistent/a.sock"},
		{[]string{"drain-self", "extra"}, 2, "unexpected argument"},
		{[]string{"undrain-self", "--socket", "/nonexistent/x.sock"}, 1, "nothing listens on /nonexistent/x.sock"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("xlb %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}
}

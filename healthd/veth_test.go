package healthd_test

import (
	"strings"
	"testing"
)

// TestDaemonVethWarning: the daemon's interface is a veth whose peer is in
// another namespace (it cannot see whether the peer has an XDP program):
// the daemon warns once in its log, with the fix, and "xlb status" shows
// the warning in the table and in JSON.
func TestDaemonVethWarning(t *testing.T) {
	l := newLab(t)
	l.writeConfig("vips: []\n")
	l.start()
	st := l.status()
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "lb0 is a veth") || !strings.Contains(st.Warnings[0], "xlb veth-peer") {
		t.Errorf("status warnings %q, want one naming lb0 and the fix", st.Warnings)
	}
	if out := l.mustXLB("status"); !strings.Contains(out, "warning: lb0 is a veth") {
		t.Errorf("xlb status shows no warning:\n%s", out)
	}
	if out := l.mustXLB("status", "-o", "json"); !strings.Contains(out, `"warnings"`) {
		t.Errorf("xlb status -o json has no warnings:\n%s", out)
	}
	if n := strings.Count(l.log.String(), "veth peer without XDP"); n != 1 {
		t.Errorf("the log warns %d times, want once:\n%s", n, l.log)
	}
}

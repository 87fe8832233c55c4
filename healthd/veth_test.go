package healthd_test

import (
	"strings"
	"testing"

	"github.com/xlb-project/xlb/loader"
)

// TestDaemonVethWarning: the daemon's interface is a veth whose peer (in
// another named namespace) has no XDP program: the daemon warns once in its
// log, with the fix, and "xlb status" shows the warning in the table and
// in JSON.
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

// TestDaemonVethPeerWithXDP: with an XDP program on the veth's peer (in
// another named namespace) the daemon has nothing to warn about.
func TestDaemonVethPeerWithXDP(t *testing.T) {
	l := newLab(t)
	if err := l.be.Do(func() error { return loader.AttachPass("be0") }); err != nil {
		t.Fatal(err)
	}
	l.writeConfig("vips: []\n")
	l.start()
	if st := l.status(); len(st.Warnings) != 0 {
		t.Errorf("status warnings %q, want none", st.Warnings)
	}
	if strings.Contains(l.log.String(), "veth peer without XDP") {
		t.Errorf("the log warns:\n%s", l.log)
	}
}

package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

// TestBackendHostCLI runs "xlb backend-host setup" and "teardown" as a user
// would, in a namespace of their own: setup attaches xdp_decap so that it
// stays after the command exits, a second setup changes nothing, teardown
// restores the host exactly, and setup refuses an interface that carries
// another XDP program.
func TestBackendHostCLI(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := buildXLB(t)
	ns, peer := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: peer, Name: "eth0"})
	state := filepath.Join(t.TempDir(), "bh.json")
	run := func(args ...string) (string, error) {
		out, err := ns.Command(bin, append(args, "--state-file", state)...).CombinedOutput()
		return string(out), err
	}
	arpIgnore := func() string {
		v, err := ns.ReadSysctl("net.ipv4.conf.all.arp_ignore")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := arpIgnore()

	for i := range 2 {
		out, err := run("backend-host", "setup", "--vip", VIP4.String(), "--vip", VIP6.String(), "--iface", "eth0")
		if err != nil {
			t.Fatalf("setup %d: %v\n%s", i, err, out)
		}
		id, err := hostnet.XDPProgID(ns, "eth0")
		if err != nil || id == 0 {
			t.Fatalf("after setup %d: no XDP program on eth0 (%v)", i, err)
		}
		var ours bool
		if err := ns.Do(func() error { var err error; ours, err = loader.DecapAttached("eth0"); return err }); err != nil || !ours {
			t.Errorf("after setup %d: xdp_decap attached = %v, %v", i, ours, err)
		}
		if arpIgnore() != "1" {
			t.Errorf("after setup %d: arp_ignore = %s", i, arpIgnore())
		}
	}
	if out, err := run("backend-host", "teardown"); err != nil {
		t.Fatalf("teardown: %v\n%s", err, out)
	}
	if id, _ := hostnet.XDPProgID(ns, "eth0"); id != 0 {
		t.Errorf("XDP program %d left on eth0 after teardown", id)
	}
	if got := arpIgnore(); got != before {
		t.Errorf("arp_ignore after teardown = %s, before setup %s", got, before)
	}
	out, _ := ns.Command("ip", "-o", "addr", "show", "dev", "lo").CombinedOutput()
	for _, v := range []netip.Addr{VIP4, VIP6} {
		if strings.Contains(string(out), v.String()+"/") {
			t.Errorf("VIP %s left on lo after teardown:\n%s", v, out)
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file left after teardown: %v", err)
	}

	// Another program on the interface: setup refuses and leaves it.
	if err := ns.Do(func() error { return loader.AttachPass("eth0") }); err != nil {
		t.Fatal(err)
	}
	other, _ := hostnet.XDPProgID(ns, "eth0")
	out2, err := run("backend-host", "setup", "--vip", VIP4.String(), "--iface", "eth0")
	if err == nil || !strings.Contains(out2, "another XDP program") {
		t.Errorf("setup over another XDP program: %v\n%s", err, out2)
	}
	if id, _ := hostnet.XDPProgID(ns, "eth0"); id != other {
		t.Errorf("setup replaced the other XDP program (%d → %d)", other, id)
	}
	if out, err := run("backend-host", "teardown"); err != nil {
		t.Errorf("teardown after a refused setup: %v\n%s", err, out)
	}
}

// TestBackendHostStatusRepair: "xlb backend-host status" reads the kernel,
// not the state file: after setup it exits 0; with the decap program
// detached behind setup's back, or the interface recreated, it names the
// missing program and exits non-zero; setup run again repairs it.
func TestBackendHostStatusRepair(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := buildXLB(t)
	ns, peer := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: peer, Name: "eth0"})
	state := filepath.Join(t.TempDir(), "bh.json")
	run := func(args ...string) (string, error) {
		out, err := ns.Command(bin, append(args, "--state-file", state)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = run("backend-host", "teardown") })
	setup := func(when string) {
		t.Helper()
		if out, err := run("backend-host", "setup", "--vip", VIP4.String(), "--vip", VIP6.String(), "--iface", "eth0", "--balancer-source", "192.0.2.0/24"); err != nil {
			t.Fatalf("setup %s: %v\n%s", when, err, out)
		}
	}
	statusOK := func(when string, want bool) string {
		t.Helper()
		out, err := run("backend-host", "status")
		if (err == nil) != want {
			t.Errorf("status %s: exit error %v, want success %v\n%s", when, err, want, out)
		}
		return out
	}
	decapLine := func(out string) string {
		for line := range strings.Lines(out) {
			if strings.Contains(line, "decap on eth0") {
				return line
			}
		}
		return ""
	}

	setup("first")
	if line := decapLine(statusOK("after setup", true)); !strings.HasPrefix(line, "ok") || !strings.Contains(line, "192.0.2.0/24") {
		t.Errorf("status after setup, decap line: %q", line)
	}

	// Detached behind setup's back.
	if err := ns.Do(func() error { return loader.DetachDecap("eth0") }); err != nil {
		t.Fatal(err)
	}
	if line := decapLine(statusOK("with the program detached", false)); !strings.HasPrefix(line, "MISSING") {
		t.Errorf("status with the program detached, decap line: %q", line)
	}
	setup("to repair the detached program")
	statusOK("after the repair", true)
	if ok, err := decapAttached(ns); err != nil || !ok {
		t.Errorf("after the repair: xdp_decap attached = %v, %v", ok, err)
	}

	// The interface recreated: the kernel forgot the attachment.
	if err := hostnet.DeleteLink(ns, "eth0"); err != nil {
		t.Fatal(err)
	}
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: peer, Name: "eth0"})
	if line := decapLine(statusOK("with the interface recreated", false)); !strings.HasPrefix(line, "MISSING") {
		t.Errorf("status with the interface recreated, decap line: %q", line)
	}
	setup("to repair the recreated interface")
	statusOK("after the second repair", true)

	// Other trust asked for: setup replaces the program, status follows.
	if out, err := run("backend-host", "setup", "--vip", VIP4.String(), "--iface", "eth0", "--balancer-source", "192.0.2.0/25", "--decap-dest", "198.51.100.11"); err != nil {
		t.Fatalf("setup with other trust: %v\n%s", err, out)
	}
	if line := decapLine(statusOK("after other trust", true)); !strings.Contains(line, "192.0.2.0/25") || !strings.Contains(line, "198.51.100.11") {
		t.Errorf("status after other trust, decap line: %q", line)
	}
	if out, err := run("backend-host", "teardown"); err != nil {
		t.Fatalf("teardown: %v\n%s", err, out)
	}
	if out, err := run("backend-host", "status"); err == nil || !strings.Contains(out, "not set up") {
		t.Errorf("status after teardown: %v\n%s", err, out)
	}
}

func decapAttached(ns hostnet.Netns) (bool, error) {
	var ok bool
	err := ns.Do(func() error {
		var err error
		ok, err = loader.DecapAttached("eth0")
		return err
	})
	return ok, err
}

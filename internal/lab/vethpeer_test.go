package lab

import (
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

// TestVethPeerCLI: "xlb veth-peer" attaches a pass-through XDP program to a
// veth peer, leaves an interface with a program alone, refuses what is no
// veth, and removes only its own program.
func TestVethPeerCLI(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := buildXLB(t)
	lb, sw := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: lb, Name: "eth0"}, hostnet.VethEnd{Netns: sw, Name: "lb1"})
	run := func(args ...string) (string, error) {
		out, err := sw.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("veth-peer", "--iface", "lb1"); err != nil {
		t.Fatalf("veth-peer: %v\n%s", err, out)
	}
	id, err := hostnet.XDPProgID(sw, "lb1")
	if err != nil || id == 0 {
		t.Fatalf("no XDP program on lb1 after veth-peer (%v)", err)
	}
	v, err := hostnet.Veth(lb, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !v.PeerKnown || !v.PeerXDP || v.NeedsPeerXDP() {
		t.Errorf("eth0's peer lb1 has the program now: %+v", v)
	}
	if out, err := run("veth-peer", "--iface", "lb1"); err != nil || !strings.Contains(out, "nothing to do") {
		t.Errorf("second veth-peer: %v\n%s", err, out)
	}
	if out, err := run("veth-peer", "--iface", "lo"); err == nil || !strings.Contains(out, "not a veth") {
		t.Errorf("veth-peer on lo: %v\n%s", err, out)
	}
	if out, err := run("veth-peer", "--iface", "lb1", "--remove"); err != nil {
		t.Fatalf("veth-peer --remove: %v\n%s", err, out)
	}
	if id, _ := hostnet.XDPProgID(sw, "lb1"); id != 0 {
		t.Errorf("program %d left on lb1 after --remove", id)
	}
	// Another program: --remove refuses to take it away.
	if err := sw.Do(func() error { return loader.AttachDecap("lb1", false) }); err != nil {
		t.Fatal(err)
	}
	if out, err := run("veth-peer", "--iface", "lb1", "--remove"); err == nil || !strings.Contains(out, "another XDP program") {
		t.Errorf("veth-peer --remove over xdp_decap: %v\n%s", err, out)
	}
	if err := sw.Do(func() error { return loader.DetachDecap("lb1") }); err != nil {
		t.Fatal(err)
	}
}

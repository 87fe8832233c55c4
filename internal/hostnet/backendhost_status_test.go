package hostnet_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
)

// missing lists the items a check found missing or wrong.
func missing(t *testing.T, ns hostnet.Netns, stateFile string, decap hostnet.Decap) []string {
	t.Helper()
	st, err := hostnet.LoadBackendHostState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	checks, err := hostnet.CheckBackendHost(ns, st, decap)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range checks {
		if !c.OK {
			out = append(out, c.Item)
		}
	}
	return out
}

// TestBackendHostRepair: setup checks the kernel, not its state file. With
// the decap program, a VIP and a sysctl taken away behind its back, the
// check names exactly those, and setup puts them back; the program stays
// setup's to detach.
func TestBackendHostRepair(t *testing.T) {
	ns := backendNetns(t)
	vip4, vip6 := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:f::10")
	decap := &fakeDecap{attached: map[string]bool{}}
	stateFile := filepath.Join(t.TempDir(), "state.json")
	b := &hostnet.BackendHost{Netns: ns, Iface: "eth0", VIPs: []netip.Addr{vip4, vip6}, StateFile: stateFile, Decap: decap}
	t.Cleanup(func() { _ = hostnet.TeardownBackendHost(ns, stateFile, decap, nil) })
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	if m := missing(t, ns, stateFile, decap); len(m) != 0 {
		t.Fatalf("after setup, missing %v", m)
	}

	delete(decap.attached, "eth0")
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrDel(lo, &netlink.Addr{IPNet: hostnet.PrefixToIPNet(netip.PrefixFrom(vip6, 128))}); err != nil {
		t.Fatal(err)
	}
	if err := ns.WriteSysctl("net/ipv4/conf/all/arp_ignore", "0"); err != nil {
		t.Fatal(err)
	}
	got := missing(t, ns, stateFile, decap)
	want := []string{"vip 2001:db8:f::10 on lo", "sysctl net/ipv4/conf/all/arp_ignore = 1", "decap on eth0"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("missing %q, want %q", got, want)
	}

	st, err := b.Setup()
	if err != nil {
		t.Fatal(err)
	}
	if m := missing(t, ns, stateFile, decap); len(m) != 0 {
		t.Errorf("after the repairing setup, missing %v", m)
	}
	if !decap.attached["eth0"] || !st.Decap {
		t.Errorf("decap attached %v, recorded as setup's %v; want both", decap.attached["eth0"], st.Decap)
	}
	if err := hostnet.TeardownBackendHost(ns, stateFile, decap, nil); err != nil {
		t.Fatal(err)
	}
	if decap.attached["eth0"] {
		t.Error("teardown left the re-attached decap program")
	}
}

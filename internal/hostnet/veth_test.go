package hostnet_test

import (
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

// TestVeth: a veth is recognised with its peer in another namespace or in
// the same one (then with its XDP state); lo is no veth.
func TestVeth(t *testing.T) {
	ns, other := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: other, Name: "sw0"})
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "a0"}, hostnet.VethEnd{Netns: ns, Name: "b0"})

	v, err := hostnet.Veth(ns, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !v.IsVeth || !v.PeerKnown || v.PeerNetns != other.Name || v.PeerName != "sw0" || v.PeerXDP || !v.NeedsPeerXDP() {
		t.Errorf("eth0 (peer sw0 in another named namespace, no XDP): %+v", v)
	}
	if fix := v.Fix("eth0"); !strings.Contains(fix, "ip netns exec "+other.Name+" xlb veth-peer --iface sw0") {
		t.Errorf("fix %q names no command", fix)
	}
	if err := other.Do(func() error { return loader.AttachPass("sw0") }); err != nil {
		t.Fatal(err)
	}
	if v, err = hostnet.Veth(ns, "eth0"); err != nil || !v.PeerXDP || v.NeedsPeerXDP() {
		t.Errorf("eth0 (peer sw0 with XDP): %+v, %v", v, err)
	}
	v, err = hostnet.Veth(ns, "a0")
	if err != nil {
		t.Fatal(err)
	}
	if !v.IsVeth || !v.PeerKnown || v.PeerNetns != "" || v.PeerName != "b0" || v.PeerXDP || !v.NeedsPeerXDP() {
		t.Errorf("a0 (peer b0 here, no XDP): %+v", v)
	}
	if err := ns.Do(func() error { return loader.AttachPass("b0") }); err != nil {
		t.Fatal(err)
	}
	v, err = hostnet.Veth(ns, "a0")
	if err != nil {
		t.Fatal(err)
	}
	if !v.PeerXDP || v.NeedsPeerXDP() {
		t.Errorf("a0 (peer b0 here, with XDP): %+v", v)
	}
	v, err = hostnet.Veth(ns, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if v.IsVeth || v.NeedsPeerXDP() {
		t.Errorf("lo: %+v", v)
	}
}

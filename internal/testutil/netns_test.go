package testutil

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
)

func TestNetnsVethPing(t *testing.T) {
	a := Netns(t)
	b := Netns(t)
	Veth(t,
		hostnet.VethEnd{Netns: a, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}, NoTxCs: true},
		hostnet.VethEnd{Netns: b, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}})

	out, err := a.Command("ping", "-c", "1", "-W", "2", "198.51.100.2").CombinedOutput()
	if err != nil {
		t.Fatalf("ping across veth: %v\n%s", err, out)
	}

	// Do switches only the calling thread: the address is visible inside.
	var found bool
	if err := b.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			found = found || i.Name == "vb"
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("vb not visible inside its namespace")
	}
	if strings.Contains(string(out), " 0 received") {
		t.Fatalf("no reply: %s", out)
	}
}

func TestNetnsRemovedAtCleanup(t *testing.T) {
	var ns hostnet.Netns
	t.Run("inner", func(t *testing.T) { ns = Netns(t) })
	if ns.Name != "" && ns.Exists() {
		t.Fatalf("namespace %s still exists after its test ended", ns.Name)
	}
}

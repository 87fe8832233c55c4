package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

// pinDir returns a directory for pins that Load will mount a bpffs on; it
// is unpinned and unmounted when the test ends, whatever happened.
func pinDir(t *testing.T) string {
	t.Helper()
	testutil.RequirePrivileged(t)
	dir := filepath.Join(t.TempDir(), "pins")
	t.Cleanup(func() {
		if err := Cleanup(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = unix.Unmount(dir, unix.MNT_DETACH) // only if Cleanup failed
	})
	return dir
}

// pinFlow loads a datapath pinned in dir with backends 1 and 2 and a VIP
// whose table sends one flow's SYN to backend 1 and the other slots to
// other, sends that SYN and closes the datapath (the pins stay). It returns
// the VIP and the flow's ACK.
func pinFlow(t *testing.T, dir string, other uint32) (VIPKey, testutil.Packet) {
	t.Helper()
	d, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4}))
	for _, id := range []uint32{1, 2} {
		must(t, d.PutBackend(id, testBackend(id)))
	}
	k := VIPKey{vip4, 80, 6}
	must(t, d.PutVIP(k, VIP{ID: 1, TableSize: tableSize}))
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	must(t, d.SetTable(1, tableFor(flowOf(syn), 1, other)))
	if got := backendOf(t, d, syn); got != 1 {
		t.Fatalf("syn to %d, want 1", got)
	}
	// The handshake's ACK puts the flow into the flow table.
	ack := syn
	ack.TCPFlags = testutil.TCPAck
	if got := backendOf(t, d, ack); got != 1 {
		t.Fatalf("ack to %d, want 1", got)
	}
	must(t, d.Close())
	return k, ack
}

func TestPinAdopt(t *testing.T) {
	dir := pinDir(t)
	k, ack := pinFlow(t, dir, 2)
	if !isBpffs(dir) {
		t.Fatalf("%s is not on a bpffs after Load", dir)
	}

	// A map an earlier build pinned and this one no longer has.
	obsolete, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	must(t, err)
	must(t, obsolete.Pin(filepath.Join(dir, obsoletePins[0])))
	must(t, obsolete.Close())

	// A new process adopts the pins: VIPs, config, counters, flows stay;
	// the obsolete pin goes.
	d2, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	defer d2.Close()
	vips, err := d2.VIPs()
	must(t, err)
	if v, ok := vips[k]; !ok || v.ID != 1 {
		t.Errorf("adopted vips %v, want %v id 1", vips, k)
	}
	if c, err := d2.BackendCounters(1); err != nil || c.Packets != 2 {
		t.Errorf("adopted backend counters %+v %v, want 2 packets (SYN, ACK)", c, err)
	}
	if _, err := os.Stat(filepath.Join(dir, obsoletePins[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("obsolete pin %s still there after Load: %v", obsoletePins[0], err)
	}
	must(t, d2.SetTable(1, tableFor(flowOf(ack), 2, 2)))
	if got := backendOf(t, d2, ack); got != 1 {
		t.Errorf("flow went to %d after the restart, want 1: flow table lost", got)
	}

	// Another flow table size cannot adopt the pinned one.
	_, err = Load(Options{PinDir: dir, FlowTableSize: 8192})
	if !errors.Is(err, ErrIncompatiblePin) {
		t.Errorf("load with another flow table size: %v, want ErrIncompatiblePin", err)
	}
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	must(t, err)
	id, _ := info.ID()
	return id
}

// xdpProg returns the ID of the XDP program attached to ifname, 0 if none.
func xdpProg(t *testing.T, ifname string) uint32 {
	t.Helper()
	l, err := netlink.LinkByName(ifname)
	must(t, err)
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId
	}
	return 0
}

func testVeth(t *testing.T) hostnet.Netns {
	ns := testutil.Netns(t)
	other := testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "xlb0"}, hostnet.VethEnd{Netns: other, Name: "xlb1"})
	return ns
}

func TestAttachReplace(t *testing.T) {
	dir := pinDir(t)
	ns := testVeth(t)
	err := ns.Do(func() error {
		d1, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
		must(t, err)
		must(t, d1.Attach("xlb0", false))
		if got, want := xdpProg(t, "xlb0"), progID(t, d1.objs.XdpLb); got != uint32(want) {
			t.Fatalf("attached program %d, want %d", got, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "link_xlb0")); err != nil {
			t.Errorf("link not pinned: %v", err)
		}
		must(t, d1.Close())
		if xdpProg(t, "xlb0") == 0 {
			t.Fatal("program detached when the loading process closed: the pinned link should keep it")
		}

		// Upgrade: a new Load replaces the program through the pinned link.
		d2, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
		must(t, err)
		defer d2.Close()
		must(t, d2.Attach("xlb0", false))
		if got, want := xdpProg(t, "xlb0"), progID(t, d2.objs.XdpLb); got != uint32(want) {
			t.Errorf("after replace attached program %d, want the new %d", got, want)
		}
		must(t, d2.Detach())
		if got := xdpProg(t, "xlb0"); got != 0 {
			t.Errorf("program %d still attached after Detach", got)
		}
		if _, err := os.Stat(filepath.Join(dir, "link_xlb0")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("link pin left after Detach: %v", err)
		}
		if err := d2.Detach(); !errors.Is(err, ErrNotAttached) {
			t.Errorf("second Detach: %v, want ErrNotAttached", err)
		}
		return nil
	})
	must(t, err)
}

func TestAttachUnpinned(t *testing.T) {
	ns := testVeth(t)
	must(t, ns.Do(func() error {
		d, err := Load(Options{FlowTableSize: 4096})
		must(t, err)
		if err := d.Attach("nonexistent0", false); err == nil {
			t.Error("attach to a missing interface succeeded")
		}
		must(t, d.Attach("xlb0", false))
		if xdpProg(t, "xlb0") == 0 {
			t.Fatal("not attached")
		}
		must(t, d.Close())
		if got := xdpProg(t, "xlb0"); got != 0 {
			t.Errorf("program %d still attached after Close without pins", got)
		}
		// Generic mode only when asked.
		d, err = Load(Options{FlowTableSize: 4096})
		must(t, err)
		defer d.Close()
		must(t, d.Attach("xlb0", true))
		l, err := netlink.LinkByName("xlb0")
		must(t, err)
		if x := l.Attrs().Xdp; x == nil || x.AttachMode != xdpAttachedSKB {
			t.Errorf("generic attach: xdp %+v, want generic (skb) mode", x)
		}
		return nil
	}))
}

func TestAttachDecap(t *testing.T) {
	ns := testVeth(t)
	must(t, ns.Do(func() error {
		must(t, AttachDecap("xlb0", false))
		// The attachment outlives every file descriptor of this process.
		if ok, err := DecapAttached("xlb0"); err != nil || !ok {
			t.Fatalf("DecapAttached = %v, %v after AttachDecap", ok, err)
		}
		must(t, AttachDecap("xlb0", false)) // idempotent
		must(t, DetachDecap("xlb0"))
		if ok, err := DecapAttached("xlb0"); err != nil || ok {
			t.Errorf("DecapAttached = %v, %v after DetachDecap", ok, err)
		}
		if err := DetachDecap("xlb0"); !errors.Is(err, ErrNotAttached) {
			t.Errorf("second DetachDecap: %v, want ErrNotAttached", err)
		}
		// Another program is not removed.
		d, err := Load(Options{FlowTableSize: 4096})
		must(t, err)
		defer d.Close()
		must(t, d.Attach("xlb0", false))
		if err := DetachDecap("xlb0"); !errors.Is(err, ErrInvalid) {
			t.Errorf("DetachDecap over xdp_lb: %v, want ErrInvalid", err)
		}
		return nil
	}))
}

func TestInvalidInput(t *testing.T) {
	d := newTestDatapath(t)
	for name, err := range map[string]error{
		"vip proto":         d.PutVIP(VIPKey{vip4, 80, 1}, VIP{ID: 1, TableSize: tableSize}),
		"vip addr":          d.PutVIP(VIPKey{Port: 80, Proto: 6}, VIP{ID: 1, TableSize: tableSize}),
		"vip id":            d.PutVIP(VIPKey{vip4, 80, 6}, VIP{ID: MaxVIPs, TableSize: tableSize}),
		"vip table size":    d.PutVIP(VIPKey{vip4, 80, 6}, VIP{ID: 1, TableSize: 1000}),
		"vip mode":          d.PutVIP(VIPKey{vip4, 80, 6}, VIP{ID: 1, Mode: 9, TableSize: tableSize}),
		"backend id 0":      d.PutBackend(0, testBackend(1)),
		"backend id max":    d.PutBackend(MaxBackends, testBackend(1)),
		"backend mac":       d.PutBackend(1, Backend{Addr: client4}),
		"table size":        d.SetTable(1, make([]uint32, 100)),
		"table backend id":  d.SetTable(1, roundRobin(tableSize, MaxBackends)),
		"config mac":        d.SetConfig(Config{}),
		"config source4":    d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer6}),
		"config mtu":        d.SetConfig(Config{SourceMAC: balancerMAC, MTU: 10}),
		"remove vip absent": d.RemoveVIP(VIPKey{vip4, 9999, 6}),
	} {
		want := ErrInvalid
		if name == "remove vip absent" {
			want = ErrNotFound
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	// Nothing changed: the VIP still forwards as before.
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	if got, want := backendOf(t, d, syn), expectedBackend(roundRobin(tableSize, 1, 2, 3, 4), flowOf(syn), false); got != want {
		t.Errorf("after rejected changes syn went to %d, want %d", got, want)
	}
	// RemoveVIP removes its tables once no key uses the ID.
	must(t, d.RemoveVIP(VIPKey{vip4, 80, 6}))
	if _, err := d.Table(1); !errors.Is(err, ErrNotFound) {
		t.Errorf("table of a removed vip: %v, want ErrNotFound", err)
	}
}

func TestLoadError(t *testing.T) {
	ve := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: R1=ctx()", "1: invalid access to packet"}}
	short := loadError("xdp_lb", ve, false)
	long := loadError("xdp_lb", ve, true)
	if !errors.Is(short, ErrVerifier) || !errors.Is(long, ErrVerifier) {
		t.Fatalf("not ErrVerifier: %v / %v", short, long)
	}
	if !strings.Contains(long.Error(), "0: R1=ctx()") || !strings.Contains(long.Error(), "invalid access") {
		t.Errorf("verbose error lacks the verifier log: %v", long)
	}
	if strings.Contains(short.Error(), "0: R1=ctx()") {
		t.Errorf("short error holds the whole log: %v", short)
	}
	if !strings.HasPrefix(short.Error(), "load xdp_lb: ") {
		t.Errorf("error does not say what failed: %v", short)
	}
}

func TestCloseTwice(t *testing.T) {
	testutil.RequirePrivileged(t)
	d, err := Load(Options{FlowTableSize: 1024})
	must(t, err)
	must(t, d.Close())
	must(t, d.Close())
}

// TestEgressRedirect: with an egress interface configured, forwarded
// packets leave by XDP_REDIRECT with the same bytes; without, by XDP_TX.
func TestEgressRedirect(t *testing.T) {
	ns := testVeth(t)
	d := newTestDatapath(t)
	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	want := encapsulated(syn, expectedBackend(roundRobin(tableSize, 1, 2, 3, 4), flowOf(syn), false), FlowHash(flowOf(syn), DefaultHashSeed, false))
	cfg := Config{SourceMAC: balancerMAC, OuterSource4: outer4, OuterSource6: outer6}
	must(t, ns.Do(func() error {
		l, err := netlink.LinkByName("xlb0")
		if err != nil {
			return err
		}
		cfg.EgressIfindex = l.Attrs().Index
		return d.SetConfig(cfg)
	}))
	for _, c := range []struct {
		egress int
		want   Action
	}{{cfg.EgressIfindex, ActionRedirect}, {0, ActionTX}} {
		cfg.EgressIfindex = c.egress
		must(t, ns.Do(func() error { return d.SetConfig(cfg) }))
		act, out, err := d.Program().Run(syn.Bytes())
		must(t, err)
		if act != c.want {
			t.Errorf("egress %d: verdict %s, want %s", c.egress, act, c.want)
		}
		diffBytes(t, out, want)
	}
	if err := d.SetConfig(Config{SourceMAC: balancerMAC, EgressIfindex: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative egress ifindex: %v, want ErrInvalid", err)
	}
}

// TestPinStaleFlowCache: a pinned flow cache of another shape (an older
// build's) is replaced by a new one, and everything else is adopted: the
// cache only copies flow table entries.
func TestPinStaleFlowCache(t *testing.T) {
	dir := pinDir(t)
	k, ack := pinFlow(t, dir, 1)

	path := filepath.Join(dir, "flow_cache")
	must(t, os.Remove(path))
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 96, MaxEntries: 8 * flowCacheSize})
	must(t, err)
	must(t, old.Pin(path))
	old.Close()

	d2, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	defer d2.Close()
	if n := d2.objs.FlowCache.MaxEntries(); n != flowCacheSize {
		t.Errorf("flow cache has %d slots after the load, want a new one of %d", n, flowCacheSize)
	}
	if vips, err := d2.VIPs(); err != nil || vips[k].ID != 1 {
		t.Errorf("adopted vips %v %v, want %v id 1", vips, err, k)
	}
	must(t, d2.SetTable(1, tableFor(flowOf(ack), 2, 2)))
	if got := backendOf(t, d2, ack); got != 1 {
		t.Errorf("flow went to %d after the restart, want 1: flow table lost", got)
	}
}

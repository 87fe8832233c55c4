package hostnet_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

// fakeDecap records attachments like the loader's persistent attach would.
type fakeDecap struct {
	attached map[string]bool
	failWith error
}

func (f *fakeDecap) Attach(ifname string) (bool, error) {
	if f.failWith != nil {
		return false, f.failWith
	}
	if f.attached[ifname] {
		return false, nil
	}
	f.attached[ifname] = true
	return true, nil
}

func (f *fakeDecap) Detach(ifname string) error {
	delete(f.attached, ifname)
	return nil
}

func (f *fakeDecap) Check(ifname string) (hostnet.BackendHostCheck, error) {
	return hostnet.BackendHostCheck{OK: f.attached[ifname]}, nil
}

// backendNetns returns a namespace with an interface eth0 (one end of a
// veth whose other end sits in a second namespace).
func backendNetns(t *testing.T) hostnet.Netns {
	t.Helper()
	ns, peer := testutil.Netns(t), testutil.Netns(t)
	testutil.Veth(t, hostnet.VethEnd{Netns: ns, Name: "eth0"}, hostnet.VethEnd{Netns: peer, Name: "eth0"})
	return ns
}

func loAddrs(t *testing.T, ns hostnet.Netns) []netip.Addr {
	t.Helper()
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		out = append(out, ip.Unmap())
	}
	return out
}

func sysctls(t *testing.T, ns hostnet.Netns) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, name := range []string{
		hostnet.ConfSysctl("all", "arp_ignore"), hostnet.ConfSysctl("all", "arp_announce"),
		hostnet.ConfSysctl("all", "rp_filter"), hostnet.ConfSysctl("eth0", "rp_filter"),
	} {
		v, err := ns.ReadSysctl(name)
		if err != nil {
			t.Fatal(err)
		}
		m[name] = v
	}
	return m
}

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8:f::10")
)

func TestBackendHostSetupTeardown(t *testing.T) {
	tests := []struct {
		name string
		// prepare changes the host before setup: what it does must
		// survive teardown.
		prepare      func(t *testing.T, ns hostnet.Netns)
		vips         []netip.Addr
		wantVIPsAdd  []netip.Addr
		wantSysctls  int // number of sysctls setup records as changed
		decapPresent bool
	}{
		{
			name:        "fresh host",
			vips:        []netip.Addr{vip4, vip6},
			wantVIPsAdd: []netip.Addr{vip4, vip6},
			wantSysctls: 2, // arp_ignore, arp_announce (rp_filter is 0 in a new namespace)
		},
		{
			name: "VIP already on lo and sysctls already set",
			prepare: func(t *testing.T, ns hostnet.Netns) {
				if out, err := ns.Command("ip", "addr", "add", "203.0.113.10/32", "dev", "lo").CombinedOutput(); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				for name, v := range map[string]string{"all/arp_ignore": "1", "all/arp_announce": "2", "all/rp_filter": "2", "eth0/rp_filter": "1"} {
					if err := ns.WriteSysctl("net/ipv4/conf/"+name, v); err != nil {
						t.Fatal(err)
					}
				}
			},
			vips:        []netip.Addr{vip4, vip6},
			wantVIPsAdd: []netip.Addr{vip6},
			wantSysctls: 2, // both rp_filter
		},
		{
			name:         "decap attached before",
			vips:         []netip.Addr{vip4},
			wantVIPsAdd:  []netip.Addr{vip4},
			wantSysctls:  2,
			decapPresent: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := backendNetns(t)
			if tt.prepare != nil {
				tt.prepare(t, ns)
			}
			beforeAddrs, beforeSysctls := loAddrs(t, ns), sysctls(t, ns)
			decap := &fakeDecap{attached: map[string]bool{"eth0": tt.decapPresent}}
			stateFile := filepath.Join(t.TempDir(), "state.json")
			b := &hostnet.BackendHost{Netns: ns, Iface: "eth0", VIPs: tt.vips, StateFile: stateFile, Decap: decap}

			st, err := b.Setup()
			if err != nil {
				t.Fatalf("setup: %v", err)
			}
			if !slices.Equal(st.VIPs, tt.wantVIPsAdd) {
				t.Errorf("VIPs recorded as added = %v, want %v", st.VIPs, tt.wantVIPsAdd)
			}
			if len(st.Sysctls) != tt.wantSysctls {
				t.Errorf("sysctls recorded = %+v, want %d", st.Sysctls, tt.wantSysctls)
			}
			if st.Decap == tt.decapPresent {
				t.Errorf("decap recorded as attached by setup = %v, want %v", st.Decap, !tt.decapPresent)
			}
			for _, v := range tt.vips {
				if !slices.Contains(loAddrs(t, ns), v) {
					t.Errorf("VIP %s not on lo after setup", v)
				}
			}
			want := map[string]string{
				"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2",
				"net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/eth0/rp_filter": "0",
			}
			for name, v := range sysctls(t, ns) {
				if v != want[name] {
					t.Errorf("after setup %s = %s, want %s", name, v, want[name])
				}
			}
			if !decap.attached["eth0"] {
				t.Error("decap not attached after setup")
			}

			// Idempotent: a second run changes nothing and records the same.
			st2, err := b.Setup()
			if err != nil {
				t.Fatalf("second setup: %v", err)
			}
			if !slices.Equal(st2.VIPs, st.VIPs) || !slices.Equal(st2.Sysctls, st.Sysctls) || st2.Decap != st.Decap {
				t.Errorf("second setup recorded %+v, first %+v", st2, st)
			}

			if err := hostnet.TeardownBackendHost(ns, stateFile, decap, nil); err != nil {
				t.Fatalf("teardown: %v", err)
			}
			if got := loAddrs(t, ns); !sameSet(got, beforeAddrs) {
				t.Errorf("lo after teardown = %v, before setup %v", got, beforeAddrs)
			}
			if got := sysctls(t, ns); !mapsEqual(got, beforeSysctls) {
				t.Errorf("sysctls after teardown = %v, before setup %v", got, beforeSysctls)
			}
			if decap.attached["eth0"] != tt.decapPresent {
				t.Errorf("decap attached after teardown = %v, want %v", decap.attached["eth0"], tt.decapPresent)
			}
			if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state file left after teardown: %v", err)
			}
			// Teardown with nothing recorded is a no-op.
			if err := hostnet.TeardownBackendHost(ns, stateFile, decap, nil); err != nil {
				t.Errorf("second teardown: %v", err)
			}
		})
	}
}

func TestBackendHostSetupRefusesBadInput(t *testing.T) {
	ns := backendNetns(t)
	stateFile := filepath.Join(t.TempDir(), "state.json")
	other := &hostnet.BackendHost{Netns: ns, Iface: "lo", VIPs: []netip.Addr{vip4}, StateFile: filepath.Join(t.TempDir(), "s.json")}
	tests := []struct {
		name    string
		b       hostnet.BackendHost
		prepare func(t *testing.T)
		wantErr string
	}{
		{name: "no iface", b: hostnet.BackendHost{VIPs: []netip.Addr{vip4}}, wantErr: "iface: required"},
		{name: "no VIP", b: hostnet.BackendHost{Iface: "eth0"}, wantErr: "vip: at least one"},
		{name: "invalid VIP", b: hostnet.BackendHost{Iface: "eth0", VIPs: []netip.Addr{{}}}, wantErr: `vip "invalid IP": allowed are unicast`},
		{name: "multicast VIP", b: hostnet.BackendHost{Iface: "eth0", VIPs: []netip.Addr{netip.MustParseAddr("224.0.0.1")}}, wantErr: `vip "224.0.0.1"`},
		{name: "missing iface", b: hostnet.BackendHost{Iface: "eth9", VIPs: []netip.Addr{vip4}}, wantErr: `iface "eth9": no such interface`},
		{
			name: "set up for another iface",
			b:    hostnet.BackendHost{Iface: "eth0", VIPs: []netip.Addr{vip4}},
			prepare: func(t *testing.T) {
				if _, err := other.Setup(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = hostnet.TeardownBackendHost(ns, other.StateFile, nil, nil) })
				stateFile = other.StateFile
			},
			wantErr: `iface "eth0": this host was set up for "lo"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare(t)
			}
			beforeAddrs, beforeSysctls := loAddrs(t, ns), sysctls(t, ns)
			b := tt.b
			b.Netns, b.StateFile = ns, stateFile
			decap := &fakeDecap{attached: map[string]bool{}}
			b.Decap = decap
			_, err := b.Setup()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("setup error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := loAddrs(t, ns); !sameSet(got, beforeAddrs) {
				t.Errorf("lo changed by refused setup: %v, before %v", got, beforeAddrs)
			}
			if got := sysctls(t, ns); !mapsEqual(got, beforeSysctls) {
				t.Errorf("sysctls changed by refused setup: %v, before %v", got, beforeSysctls)
			}
			if len(decap.attached) != 0 {
				t.Errorf("decap attached by refused setup")
			}
		})
	}
}

func TestBackendHostDecapFailureNotRecorded(t *testing.T) {
	ns := backendNetns(t)
	stateFile := filepath.Join(t.TempDir(), "state.json")
	decap := &fakeDecap{attached: map[string]bool{}, failWith: errors.New("another XDP program is attached")}
	b := &hostnet.BackendHost{Netns: ns, Iface: "eth0", VIPs: []netip.Addr{vip4}, StateFile: stateFile, Decap: decap}
	if _, err := b.Setup(); err == nil || !strings.Contains(err.Error(), "attach decap to eth0: another XDP") {
		t.Fatalf("setup error = %v, want the attach failure", err)
	}
	st, err := hostnet.LoadBackendHostState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Decap || !slices.Contains(st.VIPs, vip4) {
		t.Errorf("state after failed attach = %+v, want VIP recorded and decap not", st)
	}
	// Teardown undoes the half-done setup.
	if err := hostnet.TeardownBackendHost(ns, stateFile, decap, nil); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(loAddrs(t, ns), vip4) {
		t.Error("VIP left on lo after teardown of a failed setup")
	}
}

func sameSet(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

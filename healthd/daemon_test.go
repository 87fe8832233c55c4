package healthd

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/healthdtest"
	"github.com/xlb-project/xlb/loader"
)

const threeBackends = `
interface: veth0
vips:
  - address: 203.0.113.10:80/tcp
    table_size: 4093
    check: { kind: tcp, port: 80 }
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12 }
      - { address: 198.51.100.13, weight: 2 }
`

func TestUnknownHealthIsPanicUntilChecked(t *testing.T) {
	r := newRig(t, threeBackends)
	if len(r.prober.checks) != 3 {
		t.Fatalf("prober runs %d checks, want 3", len(r.prober.checks))
	}
	// No result yet: nobody is healthy, so the VIP panics and all serve.
	if v := r.vip(t, "203.0.113.10:80/tcp"); !v.Panic {
		t.Fatalf("want panic with all backends unknown: %+v", v)
	}
	share := r.tableShare(t, "203.0.113.10:80/tcp")
	if share["198.51.100.11"] == 0 || share["198.51.100.13"] < share["198.51.100.11"]*3/2 {
		t.Fatalf("weights not applied: %v", share)
	}
}

func TestPanicRule(t *testing.T) {
	tests := []struct {
		name      string
		threshold string
		healthy   []string
		wantPanic bool
		wantIn    []string // backends with slots
	}{
		{"all healthy", "50", []string{"198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"}, false, []string{"198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"}},
		{"half healthy is not panic", "50", []string{"198.51.100.11", "198.51.100.12"}, false, []string{"198.51.100.11", "198.51.100.12"}},
		{"one of four healthy panics", "50", []string{"198.51.100.11"}, true, []string{"198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"}},
		{"disabled", "0", []string{"198.51.100.11"}, false, []string{"198.51.100.11"}},
		{"high threshold", "80", []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"}, true, []string{"198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, `
vips:
  - address: 203.0.113.10:80/tcp
    table_size: 4093
    panic_threshold: `+tt.threshold+`
    check: { kind: tcp }
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12 }
      - { address: 198.51.100.13 }
      - { address: 198.51.100.14 }
`)
			for _, a := range []string{"198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"} {
				r.setHealth(a, HealthUnhealthy)
			}
			for _, a := range tt.healthy {
				r.setHealth(a, HealthHealthy)
			}
			r.clock.fire()
			if v := r.vip(t, "203.0.113.10:80/tcp"); v.Panic != tt.wantPanic {
				t.Fatalf("panic = %v, want %v", v.Panic, tt.wantPanic)
			}
			share := r.tableShare(t, "203.0.113.10:80/tcp")
			if share["-"] != 0 {
				t.Fatalf("empty slots: %v", share)
			}
			if len(share) != len(tt.wantIn) {
				t.Fatalf("table holds %v, want %v", share, tt.wantIn)
			}
			for _, a := range tt.wantIn {
				if share[a] == 0 {
					t.Fatalf("%s has no slot: %v", a, share)
				}
			}
		})
	}
}

func TestAllUnhealthyNoPanicGivesEmptyTable(t *testing.T) {
	r := newRig(t, strings.Replace(threeBackends, "table_size: 4093", "table_size: 251\n    panic_threshold: 0", 1))
	for _, a := range []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"} {
		r.setHealth(a, HealthUnhealthy)
	}
	r.clock.fire()
	if share := r.tableShare(t, "203.0.113.10:80/tcp"); share["-"] != 251 {
		t.Fatalf("want an empty table, got %v", share)
	}
}

func TestDebounceAndSharedTables(t *testing.T) {
	yaml := "vips:\n"
	for _, vip := range []string{"203.0.113.1:80/tcp", "203.0.113.2:80/tcp", "203.0.113.3:443/tcp"} {
		yaml += "  - address: " + vip + "\n    table_size: 4093\n    check: { kind: tcp, port: 80 }\n    backends:\n      - { address: 198.51.100.11 }\n      - { address: 198.51.100.12 }\n      - { address: 198.51.100.13 }\n"
	}
	r := newRig(t, yaml)
	// The three VIPs share three checks (same target and settings).
	if len(r.prober.checks) != 3 {
		t.Fatalf("%d checks, want 3 shared ones", len(r.prober.checks))
	}
	for _, a := range []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"} {
		r.setHealth(a, HealthHealthy)
	}
	r.clock.fire()
	builds, installs := r.d.stats.rebuilds, r.dp.Ops["SetTable"]
	// Many changes at once: one debounced reconcile.
	r.setHealth("198.51.100.12", HealthUnhealthy)
	r.setHealth("198.51.100.13", HealthUnhealthy)
	r.setHealth("198.51.100.13", HealthHealthy)
	if n := r.clock.fire(); n != 1 {
		t.Fatalf("%d reconciles scheduled, want 1", n)
	}
	if got := r.d.stats.rebuilds - builds; got != 1 {
		t.Fatalf("%d table builds for one new backend set shared by 3 VIPs, want 1", got)
	}
	if got := r.dp.Ops["SetTable"] - installs; got != 3 {
		t.Fatalf("%d tables installed, want 3", got)
	}
	for _, vip := range []string{"203.0.113.1:80/tcp", "203.0.113.2:80/tcp", "203.0.113.3:443/tcp"} {
		if share := r.tableShare(t, vip); share["198.51.100.12"] != 0 || len(share) != 2 {
			t.Fatalf("%s: %v", vip, share)
		}
	}
	// Nothing changed: nothing is written.
	before := r.dp.Ops["SetTable"] + r.dp.Ops["PutBackend"] + r.dp.Ops["PutVIP"]
	r.d.Refresh()
	r.clock.fire()
	if after := r.dp.Ops["SetTable"] + r.dp.Ops["PutBackend"] + r.dp.Ops["PutVIP"]; after != before {
		t.Fatalf("a reconcile without changes wrote %d times", after-before)
	}
}

func TestDrain(t *testing.T) {
	r := newRig(t, threeBackends)
	for _, a := range []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"} {
		r.setHealth(a, HealthHealthy)
	}
	r.clock.fire()
	k := mustKey(t, "203.0.113.10:80/tcp")
	a := netip.MustParseAddr("198.51.100.12")
	if err := r.d.Drain(k, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	b := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.12")
	if b.Admin != "draining" || b.UsableNew || !b.UsableEst || b.Slots != 0 {
		t.Fatalf("draining backend: %+v", b)
	}
	if share := r.tableShare(t, "203.0.113.10:80/tcp"); share["198.51.100.12"] != 0 {
		t.Fatalf("draining backend still in the table: %v", share)
	}
	// A draining backend does not count for panic.
	if v := r.vip(t, "203.0.113.10:80/tcp"); v.Active != 2 || v.Panic {
		t.Fatalf("vip: %+v", v)
	}
	// Undrain brings it back.
	if err := r.d.Undrain(k, a); err != nil {
		t.Fatal(err)
	}
	if share := r.tableShare(t, "203.0.113.10:80/tcp"); share["198.51.100.12"] == 0 {
		t.Fatal("undrained backend not in the table")
	}
	if err := r.d.Undrain(k, a); err == nil || !strings.Contains(err.Error(), "not draining") {
		t.Fatalf("undrain of an active backend: %v", err)
	}

	// Timeout: removed after it, from the datapath too.
	if err := r.d.Drain(k, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	id := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.12").ID
	r.dp.BackendCount[id] = countersOf(1) // traffic keeps it from being idle
	r.d.Tick()
	r.clock.advance(30 * time.Second)
	r.dp.BackendCount[id] = countersOf(2)
	r.d.Tick()
	if len(r.vip(t, "203.0.113.10:80/tcp").Backends) != 3 {
		t.Fatal("removed before its timeout")
	}
	r.clock.advance(31 * time.Second)
	r.d.Tick()
	if n := len(r.vip(t, "203.0.113.10:80/tcp").Backends); n != 2 {
		t.Fatalf("%d backends after the drain timeout, want 2", n)
	}
	if _, ok := r.dp.Backends[id]; ok {
		t.Fatal("drained backend still in the datapath")
	}
}

// TestDrainIdle: a draining backend whose counter stops leaves once it has
// been idle for drain_idle (default 10s), before its timeout.
func TestDrainIdle(t *testing.T) {
	for _, tc := range []struct {
		config string // prepended to the configuration
		idle   time.Duration
	}{
		{"", DefaultDrainIdle},
		{"drain_idle: 3s\n", 3 * time.Second},
		{"drain_idle: 1m\n", time.Minute},
	} {
		t.Run(tc.idle.String(), func(t *testing.T) {
			r := newRig(t, tc.config+threeBackends)
			k := mustKey(t, "203.0.113.10:80/tcp")
			a := netip.MustParseAddr("198.51.100.11")
			if err := r.d.Drain(k, a, time.Hour); err != nil {
				t.Fatal(err)
			}
			id := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.11").ID
			r.dp.BackendCount[id] = countersOf(5)
			r.d.Tick()
			r.clock.advance(tc.idle - time.Second)
			r.d.Tick() // counter still, but not for long enough
			if len(r.vip(t, "203.0.113.10:80/tcp").Backends) != 3 {
				t.Fatalf("removed after %s idle, want %s", tc.idle-time.Second, tc.idle)
			}
			r.clock.advance(2 * time.Second)
			r.d.Tick()
			if n := len(r.vip(t, "203.0.113.10:80/tcp").Backends); n != 2 {
				t.Fatalf("idle draining backend not removed after %s: %d backends", tc.idle+time.Second, n)
			}
		})
	}
}

func TestUnresolvedBackendReportedNotBlackholed(t *testing.T) {
	r := newRig(t, strings.Replace(threeBackends, "check: { kind: tcp, port: 80 }", "", 1))
	k := mustKey(t, "203.0.113.10:80/tcp")
	setMissing := func(a string, missing bool) {
		r.res.mu.Lock()
		r.res.missing[netip.MustParseAddr(a)] = missing
		r.res.mu.Unlock()
	}
	// Never resolved: reported and kept out of the table.
	setMissing("198.51.100.14", true)
	if err := r.d.AddBackend(k, api.BackendConfig{Address: "198.51.100.14"}); err != nil {
		t.Fatal(err)
	}
	b := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.14")
	if b.NextHopErr == "" || b.UsableNew || b.Slots != 0 || b.NextHop != "" {
		t.Fatalf("unresolved backend: %+v", b)
	}
	if share := r.tableShare(t, "203.0.113.10:80/tcp"); share["-"] != 0 || len(share) != 3 {
		t.Fatalf("table: %v", share)
	}
	// Resolved once, then lost: reported, keeps its last next hop.
	setMissing("198.51.100.13", true)
	r.d.Refresh()
	r.clock.fire()
	b = r.backend(t, "203.0.113.10:80/tcp", "198.51.100.13")
	if b.NextHopErr == "" || !b.UsableNew || b.NextHop == "" {
		t.Fatalf("backend that lost its neighbour: %+v", b)
	}
	// Resolution arrives (a neighbour change): it joins the table.
	setMissing("198.51.100.14", false)
	r.d.Refresh()
	r.clock.fire()
	if share := r.tableShare(t, "203.0.113.10:80/tcp"); share["198.51.100.14"] == 0 {
		t.Fatalf("resolved backend not in the table: %v", share)
	}
}

func TestChangesApplyCompletelyOrNotAtAll(t *testing.T) {
	r := newRig(t, threeBackends)
	k := mustKey(t, "203.0.113.10:80/tcp")
	overlay, _ := os.ReadFile(filepath.Join(r.dir, OverlayFile))
	before := r.d.Status()
	tests := []struct {
		name string
		fn   func() error
		want string
	}{
		{"unknown vip", func() error { return r.d.RemoveVIP(mustKey(t, "203.0.113.99:80/tcp")) }, "unknown VIP"},
		{"duplicate vip", func() error { return r.d.AddVIP(api.VIPConfig{Address: "203.0.113.10:80/tcp"}) }, "already exists"},
		{"duplicate backend", func() error { return r.d.AddBackend(k, api.BackendConfig{Address: "198.51.100.11"}) }, "already exists"},
		{"bad weight", func() error { return r.d.SetWeight(k, netip.MustParseAddr("198.51.100.11"), 0) }, "weight: 0: allowed are 1-1000"},
		{"unknown backend", func() error { return r.d.Drain(k, netip.MustParseAddr("198.51.100.99"), 0) }, "unknown backend"},
		{"bad vip in add", func() error { return r.d.AddVIP(api.VIPConfig{Address: "203.0.113.11:80/tcp", TableSize: 100}) }, "vip.table_size: 100 is not a prime"},
		{"bad backend in vip", func() error {
			return r.d.AddVIP(api.VIPConfig{Address: "203.0.113.11:80/tcp", Backends: []api.BackendConfig{{Address: "198.51.100.1"}, {Address: "nope"}}})
		}, "vip.backends[1].address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.fn()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
	// A datapath failure in the middle rolls back.
	r.dp.Fail = func(op string) error {
		if op == "SetTable" {
			return errors.New("injected")
		}
		return nil
	}
	if err := r.d.AddBackend(k, api.BackendConfig{Address: "198.51.100.20"}); err == nil {
		t.Fatal("want the injected failure")
	}
	r.dp.Fail = nil
	after := r.d.Status()
	if len(after.VIPs[0].Backends) != len(before.VIPs[0].Backends) {
		t.Fatal("failed change left a backend behind")
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, OverlayFile)); string(got) != string(overlay) {
		t.Fatalf("overlay changed by refused requests:\n%s\nwas\n%s", got, overlay)
	}
	r.dp.Lock()
	nb := len(r.dp.Backends)
	r.dp.Unlock()
	if nb != 3 {
		t.Fatalf("%d backends in the datapath, want 3", nb)
	}
}

func TestPersistenceAndReload(t *testing.T) {
	r := newRig(t, threeBackends)
	k := mustKey(t, "203.0.113.10:80/tcp")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.d.AddVIP(api.VIPConfig{Address: "[2001:db8:f::10]:443/tcp", Backends: []api.BackendConfig{{Address: "2001:db8:1::11", Weight: 3}}}))
	must(r.d.AddBackend(k, api.BackendConfig{Address: "198.51.100.14", Weight: 5}))
	must(r.d.RemoveBackend(k, netip.MustParseAddr("198.51.100.11")))
	must(r.d.SetWeight(k, netip.MustParseAddr("198.51.100.12"), 7))
	must(r.d.Drain(k, netip.MustParseAddr("198.51.100.13"), time.Hour))
	want := r.d.Status()

	// Restart with the same configuration: the same desired state.
	r.start(t, threeBackends)
	got := r.d.Status()
	if len(got.VIPs) != 2 {
		t.Fatalf("after restart: %d VIPs", len(got.VIPs))
	}
	for i := range want.VIPs {
		if len(got.VIPs[i].Backends) != len(want.VIPs[i].Backends) {
			t.Fatalf("vip %s: %d backends, want %d", want.VIPs[i].Address, len(got.VIPs[i].Backends), len(want.VIPs[i].Backends))
		}
		for j, b := range want.VIPs[i].Backends {
			g := got.VIPs[i].Backends[j]
			if g.Address != b.Address || g.Weight != b.Weight || g.Admin != b.Admin || !g.DrainUntil.Equal(b.DrainUntil) {
				t.Fatalf("backend after restart %+v, want %+v", g, b)
			}
		}
	}

	// A changed configuration contradicting the overlay: the config wins.
	changed := `
vips:
  - address: "[2001:db8:f::10]:443/tcp"
    backends:
      - { address: "2001:db8:1::12" }
  - address: 203.0.113.10:80/tcp
    table_size: 4093
    backends:
      - { address: 198.51.100.14, weight: 1 }
      - { address: 198.51.100.15 }
`
	c, err := ParseConfig([]byte(changed))
	must(err)
	must(r.d.Apply(c))
	st := r.d.Status()
	var v6, v4 api.VIPStatus
	for _, v := range st.VIPs {
		if strings.HasPrefix(v.Address, "[") {
			v6 = v
		} else {
			v4 = v
		}
	}
	if len(v6.Backends) != 1 || v6.Backends[0].Address != "2001:db8:1::12" {
		t.Fatalf("config-defined VIP should replace the overlay's: %+v", v6.Backends)
	}
	if len(v4.Backends) != 2 || v4.Backends[0].Weight != 1 {
		t.Fatalf("v4 backends: %+v", v4.Backends)
	}
	ov, err := LoadOverlay(r.dir)
	must(err)
	if !ov.Empty() {
		t.Fatalf("contradicted entries should leave the overlay: %+v", ov)
	}

	// A bad configuration on reload is refused and the running state kept.
	bad := &Config{VIPs: []api.VIPConfig{{Address: "203.0.113.10:80/tcp", TableSize: 12}}}
	if err := r.d.Apply(bad); err == nil {
		t.Fatal("bad config accepted")
	}
	if st2 := r.d.Status(); len(st2.VIPs) != 2 {
		t.Fatal("refused reload changed the state")
	}
}

func TestOverlayFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	o := &Overlay{Version: overlayVersion, RemoveVIPs: []api.VIPKey{mustKey(t, "203.0.113.1:80/tcp")}}
	if err := o.Save(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != OverlayFile {
		t.Fatalf("state dir holds %v, want only %s", entries, OverlayFile)
	}
	got, err := LoadOverlay(dir)
	if err != nil || len(got.RemoveVIPs) != 1 {
		t.Fatalf("load: %+v %v", got, err)
	}
	// A corrupt file is an error, not an empty state.
	if err := os.WriteFile(filepath.Join(dir, OverlayFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOverlay(dir); err == nil {
		t.Fatal("corrupt overlay accepted")
	}
}

func TestRemoveVIPFreesEverything(t *testing.T) {
	r := newRig(t, threeBackends)
	if err := r.d.RemoveVIP(mustKey(t, "203.0.113.10:80/tcp")); err != nil {
		t.Fatal(err)
	}
	r.dp.Lock()
	defer r.dp.Unlock()
	if len(r.dp.VIPByKey) != 0 || len(r.dp.Backends) != 0 {
		t.Fatalf("left behind: %d VIPs, %d backends", len(r.dp.VIPByKey), len(r.dp.Backends))
	}
	if len(r.prober.checks) != 0 {
		t.Fatalf("checks left: %v", r.prober.checks)
	}
}

func TestRestartKeepsIDsAndTables(t *testing.T) {
	r := newRig(t, threeBackends)
	k := mustKey(t, "203.0.113.10:80/tcp")
	if err := r.d.AddVIP(api.VIPConfig{Address: "203.0.113.11:80/tcp", TableSize: 251, Backends: []api.BackendConfig{{Address: "198.51.100.30"}}}); err != nil {
		t.Fatal(err)
	}
	// Churn IDs so that a fresh allocator would give different ones.
	for _, a := range []string{"198.51.100.40", "198.51.100.41"} {
		if err := r.d.AddBackend(k, api.BackendConfig{Address: a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.d.RemoveBackend(k, netip.MustParseAddr("198.51.100.40")); err != nil {
		t.Fatal(err)
	}
	snapshot := func() (map[string]uint32, map[uint32][]uint32) {
		ids := map[string]uint32{}
		for _, v := range r.d.Status().VIPs {
			ids[v.Address] = v.ID
			for _, b := range v.Backends {
				ids[v.Address+" "+b.Address] = b.ID
			}
		}
		r.dp.Lock()
		defer r.dp.Unlock()
		tables := map[uint32][]uint32{}
		for id, tb := range r.dp.Tables {
			tables[id] = append([]uint32(nil), tb...)
		}
		return ids, tables
	}
	ids, tables := snapshot()
	// A VIP left in the datapath by nobody is removed on adoption.
	r.dp.VIPByKey[toLoaderKey(mustKey(t, "203.0.113.99:80/tcp"))] = loader.VIP{ID: 900, TableSize: 251}

	r.start(t, threeBackends)
	ids2, tables2 := snapshot()
	for name, id := range ids {
		if ids2[name] != id {
			t.Errorf("%s: ID %d after restart, was %d", name, ids2[name], id)
		}
	}
	for id, tb := range tables {
		if !slices.Equal(tables2[id], tb) {
			t.Errorf("table of VIP %d changed across the restart", id)
		}
	}
	if _, ok := r.dp.VIPByKey[toLoaderKey(mustKey(t, "203.0.113.99:80/tcp"))]; ok {
		t.Error("stale VIP not removed")
	}
	// New IDs continue after the old ones rather than reusing freed ones.
	if err := r.d.AddBackend(k, api.BackendConfig{Address: "198.51.100.42"}); err != nil {
		t.Fatal(err)
	}
	if got := r.backend(t, "203.0.113.10:80/tcp", "198.51.100.42").ID; got <= ids["203.0.113.10:80/tcp 198.51.100.41"] {
		t.Errorf("new backend got ID %d, reusing a freed one", got)
	}
}

// A restarted daemon starts the checks of backends it finds in the adopted
// tables healthy: while the new checks count up to rise, a backend that is
// still unknown must stay usable, or the established flows on it would be
// re-steered (and reset) the moment the others turn healthy and panic ends.
func TestRestartStartsAdoptedBackendsHealthy(t *testing.T) {
	r := newRig(t, threeBackends)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.setHealth("198.51.100.13", HealthUnhealthy)
	r.clock.fire()
	if got := r.tableShare(t, "203.0.113.10:80/tcp"); got["198.51.100.13"] != 0 || got["198.51.100.11"] == 0 {
		t.Fatalf("before restart: table shares %v, want .13 out", got)
	}

	r.start(t, threeBackends)
	for id, c := range r.prober.checks {
		want := c.Target.Addr().String() != "198.51.100.13"
		if c.StartHealthy != want {
			t.Errorf("check %s: StartHealthy = %v, want %v", id, c.StartHealthy, want)
		}
	}
	for _, a := range []string{"198.51.100.11", "198.51.100.12"} {
		if b := r.backend(t, "203.0.113.10:80/tcp", a); b.Health != HealthHealthy {
			t.Errorf("%s after restart: health %q, want healthy", a, b.Health)
		}
	}
	if v := r.vip(t, "203.0.113.10:80/tcp"); v.Panic {
		t.Errorf("VIP in panic after restart: %+v", v)
	}
	if got := r.tableShare(t, "203.0.113.10:80/tcp"); got["198.51.100.13"] != 0 || got["198.51.100.11"] == 0 || got["198.51.100.12"] == 0 {
		t.Errorf("after restart: table shares %v, want .11 and .12 only", got)
	}
	// Only the first reconcile after adoption starts checks warm.
	if err := r.d.AddBackend(mustKey(t, "203.0.113.10:80/tcp"), api.BackendConfig{Address: "198.51.100.14"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.prober.checks {
		if c.Target.Addr().String() == "198.51.100.14" && c.StartHealthy {
			t.Error("a backend added after the restart starts healthy")
		}
	}
}

// The ordering rule, step by step: a backend is written before a table
// names it; the table stops naming it before it is removed; a VIP entry
// comes after its table.
func TestOrderingRule(t *testing.T) {
	dp := healthdtest.NewMemDatapath()
	var log []string
	dp.Log = &log
	d, err := New(Options{Datapath: dp, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	k := mustKey(t, "203.0.113.10:80/tcp")
	steps := []struct {
		name string
		fn   func() error
		want []string
	}{
		{"add vip with a backend", func() error {
			return d.AddVIP(api.VIPConfig{Address: k.String(), TableSize: 251, Backends: []api.BackendConfig{{Address: "198.51.100.11"}}})
		}, []string{"PutBackend 1", "SetTable 0 [1]", "PutVIP 0"}},
		{"add a backend", func() error { return d.AddBackend(k, api.BackendConfig{Address: "198.51.100.12"}) },
			[]string{"PutBackend 2", "SetTable 0 [1 2]"}},
		{"drain: out of the table first, then not usable for new flows", func() error { return d.Drain(k, netip.MustParseAddr("198.51.100.11"), time.Hour) },
			[]string{"SetTable 0 [2]", "PutBackend 1"}},
		{"undrain: usable first, then in the table", func() error { return d.Undrain(k, netip.MustParseAddr("198.51.100.11")) },
			[]string{"PutBackend 1", "SetTable 0 [1 2]"}},
		{"remove: out of the table, then removed", func() error { return d.RemoveBackend(k, netip.MustParseAddr("198.51.100.11")) },
			[]string{"SetTable 0 [2]", "RemoveBackend 1"}},
		{"a new backend gets a fresh ID, not the freed one", func() error { return d.AddBackend(k, api.BackendConfig{Address: "198.51.100.13"}) },
			[]string{"PutBackend 3", "SetTable 0 [2 3]"}},
		{"remove vip: the entry (and its table) first, then its backends", func() error { return d.RemoveVIP(k) },
			[]string{"RemoveVIP 0", "RemoveBackend 2", "RemoveBackend 3"}},
	}
	for _, s := range steps {
		log = log[:0]
		if err := s.fn(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := slices.Clone(log)
		if s.name == "remove vip: the entry (and its table) first, then its backends" {
			slices.Sort(got[1:]) // backends of one VIP go in map order
		}
		if !slices.Equal(got, s.want) {
			t.Fatalf("%s: writes %q, want %q", s.name, got, s.want)
		}
	}
}

// TestVIPCountersKeepRemovedBackends: the datapath counts per backend, and
// a VIP's total still holds what a backend forwarded after it is removed.
func TestVIPCountersKeepRemovedBackends(t *testing.T) {
	r := newRig(t, threeBackends)
	const vip = "203.0.113.10:80/tcp"
	gone, stays := r.backend(t, vip, "198.51.100.11").ID, r.backend(t, vip, "198.51.100.12").ID
	r.dp.BackendCount[gone] = countersOf(5)
	r.dp.BackendCount[stays] = countersOf(7)
	total := func() uint64 {
		t.Helper()
		st, err := r.d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range st.VIPs {
			if v.Address == vip {
				return v.Packets
			}
		}
		t.Fatalf("no VIP %s in %+v", vip, st.VIPs)
		return 0
	}
	if got := total(); got != 12 {
		t.Fatalf("VIP packets %d before the removal, want 12", got)
	}
	if err := r.d.RemoveBackend(mustKey(t, vip), netip.MustParseAddr("198.51.100.11")); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.dp.Backends[gone]; ok {
		t.Fatalf("backend %d still in the datapath", gone)
	}
	if got := total(); got != 12 {
		t.Errorf("VIP packets %d after removing a backend, want 12 (its 5 retired)", got)
	}
	if got := r.dp.Retired[r.vip(t, vip).ID]; got != countersOf(5) {
		t.Errorf("retired counters %+v, want %+v", got, countersOf(5))
	}
}

package healthd

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
	"golang.org/x/sys/unix"
)

// tableReadWriter is what the table tests read: a MemDatapath or the real
// loader.
type tableReadWriter interface {
	Datapath
	tableReader
}

// addrTable is a VIP's installed table as backend addresses per slot ("" for
// an empty slot): comparable across datapaths, whose backend IDs differ.
func addrTable(t *testing.T, d *Daemon, dp tableReadWriter, backends func(id uint32) netip.Addr, vip string) []string {
	t.Helper()
	d.mu.Lock()
	dv := d.dp.vips[mustKey(t, vip)]
	d.mu.Unlock()
	if dv == nil {
		t.Fatalf("vip %s not planned", vip)
	}
	table, err := dp.Table(dv.id)
	if err != nil {
		t.Fatalf("table of %s: %v", vip, err)
	}
	out := make([]string, len(table))
	for i, id := range table {
		if id != 0 {
			out[i] = backends(id).String()
		}
	}
	return out
}

// freshTable is the table a fresh build gives over the usable members, by
// address, in the order the daemon lists them (sorted by address).
func freshTable(t *testing.T, size uint32, members map[string]uint32) []string {
	t.Helper()
	addrs := make([]netip.Addr, 0, len(members))
	for a := range members {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	keys := make([]string, len(addrs))
	weights := make([]uint32, len(addrs))
	for i, a := range addrs {
		keys[i], weights[i] = a.String(), members[a.String()]
	}
	pos, err := maglevBuild(keys, weights, size)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(pos))
	for i, p := range pos {
		out[i] = keys[p]
	}
	return out
}

// healthySharedRig is a rig with sharedSet(3), every backend healthy and
// the tables installed.
func healthySharedRig(t *testing.T) (*rig, []string) {
	t.Helper()
	yaml, vips := sharedSet(3)
	r := newRig(t, yaml)
	for b := 11; b <= 16; b++ {
		r.setHealth(fmt.Sprintf("198.51.100.%d", b), HealthHealthy)
	}
	r.clock.fire()
	return r, vips
}

// sharedSet is nVIPs VIPs with the same backends .11-.16 (weights 1-3),
// checked, 4093-slot tables.
func sharedSet(nVIPs int) (string, []string) {
	yaml := "vips:\n"
	var vips []string
	for i := range nVIPs {
		vip := fmt.Sprintf("203.0.113.%d:80/tcp", 1+i)
		vips = append(vips, vip)
		yaml += "  - address: " + vip + "\n    table_size: 4093\n    check: { kind: tcp, port: 80 }\n    backends:\n"
		for b := 11; b <= 16; b++ {
			yaml += fmt.Sprintf("      - { address: 198.51.100.%d, weight: %d }\n", b, 1+b%3)
		}
	}
	return yaml, vips
}

func weightOf(b int) uint32 { return uint32(1 + b%3) }

// After flips patched in place, every table is the one a fresh build gives,
// slot for slot.
func TestPatchedTablesMatchFreshBuild(t *testing.T) {
	r, vips := healthySharedRig(t)
	byID := func(id uint32) netip.Addr { return r.dp.Backends[id].Addr }
	up := map[int]bool{11: true, 12: true, 13: true, 14: true, 15: true, 16: true}
	for step, flip := range []int{12, 15, 12, 11, 15, 11, 16} {
		up[flip] = !up[flip]
		state := HealthUnhealthy
		if up[flip] {
			state = HealthHealthy
		}
		r.setHealth(fmt.Sprintf("198.51.100.%d", flip), state)
		r.clock.fire()
		members := map[string]uint32{}
		for b, ok := range up {
			if ok {
				members[fmt.Sprintf("198.51.100.%d", b)] = weightOf(b)
			}
		}
		want := freshTable(t, 4093, members)
		for _, vip := range vips {
			if got := addrTable(t, r.d, r.dp, byID, vip); !slices.Equal(got, want) {
				t.Fatalf("step %d (flip .%d): table of %s differs from a fresh build", step, flip, vip)
			}
		}
	}
	if r.d.stats.patches < 3*7 {
		t.Fatalf("%d tables patched in 7 flips of 3 VIPs, want all 21: the test did not test patching", r.d.stats.patches)
	}
}

// VIPs with one backend set share its build and its moves; one that
// diverges (a backend of its own) gets its own table, is patched from its
// own, and converges again when the backend leaves.
func TestPatchedTablesDivergeAndConverge(t *testing.T) {
	r, vips := healthySharedRig(t)
	byID := func(id uint32) netip.Addr { return r.dp.Backends[id].Addr }
	shared := map[string]uint32{}
	for b := 11; b <= 16; b++ {
		shared[fmt.Sprintf("198.51.100.%d", b)] = weightOf(b)
	}
	check := func(what string, vip string, members map[string]uint32) {
		t.Helper()
		if got := addrTable(t, r.d, r.dp, byID, vip); !slices.Equal(got, freshTable(t, 4093, members)) {
			t.Fatalf("%s: table of %s differs from a fresh build", what, vip)
		}
	}

	// VIP 2 diverges: a backend only it has (unchecked: healthy at once).
	writes := r.dp.Ops["SetTable"] + r.dp.Ops["PatchTable"]
	if err := r.d.AddBackend(mustKey(t, vips[1]), api.BackendConfig{Address: "198.51.100.30", Check: nil}); err != nil {
		t.Fatal(err)
	}
	// The VIP's check applies to it too: make it healthy.
	r.setHealth("198.51.100.30", HealthHealthy)
	r.clock.fire()
	if got := r.dp.Ops["SetTable"] + r.dp.Ops["PatchTable"] - writes; got != 1 {
		t.Fatalf("%d tables written for a change of one VIP, want 1", got)
	}
	own := map[string]uint32{"198.51.100.30": 1}
	for a, w := range shared {
		own[a] = w
	}
	check("diverged", vips[1], own)
	check("diverged", vips[0], shared)

	// A flip of a shared backend: two backend sets, two builds, one
	// comparison of moves for each.
	builds := r.d.stats.rebuilds
	r.setHealth("198.51.100.13", HealthUnhealthy)
	r.clock.fire()
	if got := r.d.stats.rebuilds - builds; got != 2 {
		t.Fatalf("%d builds for two backend sets, want 2", got)
	}
	delete(shared, "198.51.100.13")
	delete(own, "198.51.100.13")
	for _, vip := range []string{vips[0], vips[2]} {
		check("flip after divergence", vip, shared)
	}
	check("flip after divergence", vips[1], own)

	// VIP 2 converges: the same table as the others again, by address.
	if err := r.d.RemoveBackend(mustKey(t, vips[1]), netip.MustParseAddr("198.51.100.30")); err != nil {
		t.Fatal(err)
	}
	for _, vip := range vips {
		check("converged", vip, shared)
	}
}

// A datapath that cannot patch (tables from an earlier build) gets whole
// tables, with the same result.
func TestTablesWithoutPatching(t *testing.T) {
	yaml, vips := sharedSet(2)
	r := newRig(t, yaml)
	r.dp.NoPatch = true
	for b := 11; b <= 16; b++ {
		r.setHealth(fmt.Sprintf("198.51.100.%d", b), HealthHealthy)
	}
	r.clock.fire()
	r.setHealth("198.51.100.14", HealthUnhealthy)
	r.clock.fire()
	members := map[string]uint32{}
	for b := 11; b <= 16; b++ {
		if b != 14 {
			members[fmt.Sprintf("198.51.100.%d", b)] = weightOf(b)
		}
	}
	for _, vip := range vips {
		if got := addrTable(t, r.d, r.dp, func(id uint32) netip.Addr { return r.dp.Backends[id].Addr }, vip); !slices.Equal(got, freshTable(t, 4093, members)) {
			t.Fatalf("table of %s differs from a fresh build", vip)
		}
	}
	if r.d.stats.patches != 0 || r.dp.Ops["PatchTable"] == 0 {
		t.Fatalf("patches %d, PatchTable calls %d: want tried and refused", r.d.stats.patches, r.dp.Ops["PatchTable"])
	}
}

var _ tableReadWriter = (*loader.Datapath)(nil)

// On the real loader: flips are patched into the kernel's table maps and
// read back as a fresh build; a restarted daemon adopting the pins installs
// and then patches the tables it adopted.
func TestLoaderTablesPatchedAcrossRestart(t *testing.T) {
	testutil.RequirePrivileged(t)
	pins := filepath.Join(t.TempDir(), "pins")
	t.Cleanup(func() {
		if err := loader.Cleanup(pins); err != nil {
			t.Errorf("cleanup pins: %v", err)
		}
		_ = unix.Unmount(pins, unix.MNT_DETACH) // only if Cleanup failed
	})
	yaml, vips := sharedSet(3)
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	clock := newFakeClock()
	start := func() (*Daemon, *loader.Datapath) {
		t.Helper()
		dp, err := loader.Load(loader.Options{PinDir: pins, FlowTableSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Options{Datapath: dp, Clock: clock, Prober: &fakeProber{}, StateDir: stateDir})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		return d, dp
	}
	setHealth := func(d *Daemon, b int, state string) {
		d.mu.Lock()
		var ids []string
		for id, c := range d.checks {
			if c.Target.Addr() == netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", b)) {
				ids = append(ids, id)
			}
		}
		d.mu.Unlock()
		for _, id := range ids {
			d.HealthChanged(id, state, "", clock.Now())
		}
		clock.fire()
		if d.lastErr != nil {
			t.Fatal(d.lastErr)
		}
	}
	// byID names backend IDs from the daemon's own records.
	byID := func(d *Daemon) func(uint32) netip.Addr {
		d.mu.Lock()
		defer d.mu.Unlock()
		m := map[uint32]netip.Addr{}
		for _, dv := range d.dp.vips {
			for a, db := range dv.backends {
				m[db.id] = a
			}
		}
		return func(id uint32) netip.Addr { return m[id] }
	}
	up := map[int]bool{}
	checkAll := func(what string, d *Daemon, dp *loader.Datapath) {
		t.Helper()
		members := map[string]uint32{}
		for b, ok := range up {
			if ok {
				members[fmt.Sprintf("198.51.100.%d", b)] = weightOf(b)
			}
		}
		want := freshTable(t, 4093, members)
		for _, vip := range vips {
			if got := addrTable(t, d, dp, byID(d), vip); !slices.Equal(got, want) {
				t.Fatalf("%s: table of %s in the kernel differs from a fresh build", what, vip)
			}
		}
	}

	d, dp := start()
	for b := 11; b <= 16; b++ {
		up[b] = true
		setHealth(d, b, HealthHealthy)
	}
	checkAll("healthy", d, dp)
	patches := d.stats.patches
	for _, b := range []int{13, 16, 13} {
		up[b] = !up[b]
		state := HealthUnhealthy
		if up[b] {
			state = HealthHealthy
		}
		setHealth(d, b, state)
		checkAll(fmt.Sprintf("flip .%d", b), d, dp)
	}
	if got := d.stats.patches - patches; got != 9 {
		t.Fatalf("%d tables patched in 3 flips of 3 VIPs, want 9", got)
	}
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: a new daemon and loader adopt the pins, then a flip.
	d, dp = start()
	defer dp.Close()
	checkAll("adopted", d, dp)
	up[11] = false
	setHealth(d, 11, HealthUnhealthy)
	checkAll("flip after the restart", d, dp)
	if d.stats.patches != 3 {
		t.Fatalf("%d tables patched after the restart, want 3", d.stats.patches)
	}
}

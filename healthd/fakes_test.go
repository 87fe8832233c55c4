package healthd

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/healthdtest"
	"github.com/xlb-project/xlb/loader"
)

// fakeClock runs AfterFunc callbacks only when fire is called.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) AfterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, f)
	return func() bool { return true }
}

// fire runs the pending callbacks and reports how many ran.
func (c *fakeClock) fire() int {
	c.mu.Lock()
	p := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, f := range p {
		f()
	}
	return len(p)
}

type fakeProber struct {
	mu     sync.Mutex
	checks map[string]HealthCheck
}

func (p *fakeProber) Set(id string, c HealthCheck) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.checks == nil {
		p.checks = map[string]HealthCheck{}
	}
	p.checks[id] = c
	return nil
}

func (p *fakeProber) Remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.checks, id)
}

// fakeResolver resolves every address to a MAC derived from it, except
// those in missing.
type fakeResolver struct {
	mu      sync.Mutex
	missing map[netip.Addr]bool
	shift   map[netip.Addr]byte // changes the MAC an address resolves to
}

func (r *fakeResolver) Resolve(a netip.Addr, _ bool) (net.HardwareAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing[a] {
		return nil, errors.New("no neighbour entry")
	}
	b := a.As16()
	return net.HardwareAddr{0x02, r.shift[a], b[12], b[13], b[14], b[15]}, nil
}

type rig struct {
	d      *Daemon
	dp     *healthdtest.MemDatapath
	clock  *fakeClock
	prober *fakeProber
	res    *fakeResolver
	dir    string
}

func newRig(t *testing.T, yaml string) *rig {
	t.Helper()
	r := &rig{dp: healthdtest.NewMemDatapath(), clock: newFakeClock(), prober: &fakeProber{}, res: &fakeResolver{missing: map[netip.Addr]bool{}, shift: map[netip.Addr]byte{}}, dir: t.TempDir()}
	r.start(t, yaml)
	return r
}

// start (re)creates the daemon on the same datapath and state directory.
func (r *rig) start(t *testing.T, yaml string) {
	t.Helper()
	d, err := New(Options{Datapath: r.dp, Prober: r.prober, Resolver: r.res, Clock: r.clock, StateDir: r.dir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(c); err != nil {
		t.Fatal(err)
	}
	r.d = d
}

// setHealth sets every check of backend address a to state.
func (r *rig) setHealth(a, state string) {
	r.d.mu.Lock()
	var ids []string
	for id, c := range r.d.checks {
		if c.Target.Addr().String() == a {
			ids = append(ids, id)
		}
	}
	r.d.mu.Unlock()
	for _, id := range ids {
		r.d.HealthChanged(id, state, "", r.clock.Now())
	}
}

// tableShare counts, for a VIP, the slots of each backend address.
func (r *rig) tableShare(t *testing.T, vip string) map[string]int {
	t.Helper()
	r.dp.Lock()
	defer r.dp.Unlock()
	v, ok := r.dp.VIPByKey[toLoaderKey(mustKey(t, vip))]
	if !ok {
		t.Fatalf("vip %s not in the datapath", vip)
	}
	out := map[string]int{}
	for _, id := range r.dp.Tables[v.ID] {
		if id == 0 {
			out["-"]++
			continue
		}
		out[r.dp.Backends[id].Addr.String()]++
	}
	return out
}

func (r *rig) backend(t *testing.T, vip, addr string) api.BackendStatus {
	t.Helper()
	for _, v := range r.d.Status().VIPs {
		if v.Address != vip {
			continue
		}
		for _, b := range v.Backends {
			if b.Address == addr {
				return b
			}
		}
	}
	t.Fatalf("backend %s of %s not in status", addr, vip)
	return api.BackendStatus{}
}

func (r *rig) vip(t *testing.T, vip string) api.VIPStatus {
	t.Helper()
	for _, v := range r.d.Status().VIPs {
		if v.Address == vip {
			return v
		}
	}
	t.Fatalf("vip %s not in status", vip)
	return api.VIPStatus{}
}

func countersOf(packets uint64) loader.Counters {
	return loader.Counters{Packets: packets, Bytes: packets * 100}
}

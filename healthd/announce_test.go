package healthd

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/bgp"
)

// fakeSpeaker records what the daemon asks a BGP speaker to announce. The
// real speaker is tested against GoBGP (healthd/bgp) and FRR (internal/lab
// TestFleetBGP).
type fakeSpeaker struct {
	mu      sync.Mutex
	routes  map[netip.Addr]bool // announced; true: with GRACEFUL_SHUTDOWN
	syncs   int
	stopped bool
}

func (s *fakeSpeaker) Sync(want map[netip.Addr]bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("stopped")
	}
	s.routes = maps.Clone(want)
	s.syncs++
	return nil
}

func (s *fakeSpeaker) Announced() []bgp.Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []bgp.Announcement
	for a, g := range s.routes {
		out = append(out, bgp.Announcement{VIP: a, GracefulShutdown: g})
	}
	return out
}

func (s *fakeSpeaker) Counts() bgp.Counts { return bgp.Counts{} }

func (s *fakeSpeaker) Sessions(context.Context) ([]bgp.Session, error) {
	return []bgp.Session{{Peer: "198.51.100.1", AS: 65000, State: "established"}}, nil
}

func (s *fakeSpeaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.routes = nil
}

// state returns "" (not announced), "up" or "gshut" for an address.
func (s *fakeSpeaker) state(a string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.routes[netip.MustParseAddr(a)]
	switch {
	case !ok:
		return ""
	case g:
		return "gshut"
	}
	return "up"
}

const announceYAML = `
interface: eth0
bgp:
  local_as: 65001
  router_id: 198.51.100.2
  graceful_shutdown_wait: 20ms
  leave_wait: 20ms
  peers: [{ address: 198.51.100.1, as: 65000, hold_time: 3s }]
vips:
  - address: 203.0.113.10:80/tcp
    check: { kind: tcp, port: 80 }
    backends: [{ address: 198.51.100.11 }, { address: 198.51.100.12 }]
  - address: 203.0.113.10:443/tcp
    min_healthy: 2
    check: { kind: tcp, port: 443 }
    backends: [{ address: 198.51.100.11 }, { address: 198.51.100.12 }]
  - address: 203.0.113.20:80/tcp
    announce: false
    backends: [{ address: 198.51.100.13 }]
`

// bgpRig is a daemon with BGP on the fake speaker, attached.
func bgpRig(t *testing.T) (*rig, *fakeSpeaker) {
	t.Helper()
	r := newRig(t, announceYAML)
	sp := &fakeSpeaker{}
	r.d.EnableBGP(sp, *r.d.Config().BGP)
	return r, sp
}

// checkResults feeds one result of every check (the first health round).
func (r *rig) checkResults() {
	r.d.mu.Lock()
	var ids []string
	for id := range r.d.checks {
		ids = append(ids, id)
	}
	r.d.mu.Unlock()
	for _, id := range ids {
		r.d.CheckResult(id)
	}
}

func reasonOf(t *testing.T, r *rig, addr string) string {
	t.Helper()
	for _, a := range r.d.Status().BGP.Addresses {
		if a.Address == addr {
			return a.Reason
		}
	}
	t.Fatalf("no address %s in the BGP status", addr)
	return ""
}

func TestAnnounceOnlyWhenServable(t *testing.T) {
	r, sp := bgpRig(t)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire()
	if sp.syncs != 0 {
		t.Fatalf("the speaker was synced %d times before the datapath was attached", sp.syncs)
	}
	r.d.SetAttached()
	if got := sp.state("203.0.113.10"); got != "" {
		t.Fatalf("announced before the first health round: %q", got)
	}
	if why := reasonOf(t, r, "203.0.113.10"); !strings.Contains(why, "first health round") {
		t.Fatalf("reason %q", why)
	}
	r.checkResults()
	if got := sp.state("203.0.113.10"); got != "up" {
		t.Fatalf("203.0.113.10 after the first round with every backend healthy: %q, want announced", got)
	}
	// announce: false keeps the address out, whatever its health.
	if got := sp.state("203.0.113.20"); got != "" {
		t.Fatalf("203.0.113.20 (announce: false) is announced")
	}
	if why := reasonOf(t, r, "203.0.113.20"); !strings.Contains(why, "announce is false") {
		t.Fatalf("reason %q", why)
	}

	// :443 needs 2 healthy backends: one down withdraws the whole address,
	// although :80 could still be served.
	r.setHealth("198.51.100.12", HealthUnhealthy)
	r.clock.fire()
	if got := sp.state("203.0.113.10"); got != "" {
		t.Fatalf("203.0.113.10 with :443 below min_healthy: %q, want withdrawn", got)
	}
	if why := reasonOf(t, r, "203.0.113.10"); !strings.Contains(why, ":443/tcp: 1 healthy backends, min_healthy is 2") {
		t.Fatalf("reason %q", why)
	}
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire()
	if got := sp.state("203.0.113.10"); got != "up" {
		t.Fatalf("203.0.113.10 after recovery: %q, want announced", got)
	}
	// Every backend down: withdrawn, although panic forwards to all.
	r.setHealth("198.51.100.11", HealthUnhealthy)
	r.setHealth("198.51.100.12", HealthUnhealthy)
	r.clock.fire()
	if got := sp.state("203.0.113.10"); got != "" {
		t.Fatalf("203.0.113.10 with no healthy backend: %q, want withdrawn", got)
	}
}

func TestDrainSelf(t *testing.T) {
	r, sp := bgpRig(t)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire()
	r.d.SetAttached()
	r.checkResults()
	if got := sp.state("203.0.113.10"); got != "up" {
		t.Fatalf("before drain-self: %q", got)
	}
	if err := r.d.DrainSelf(); err != nil {
		t.Fatal(err)
	}
	if got := sp.state("203.0.113.10"); got != "gshut" {
		t.Fatalf("right after drain-self: %q, want GRACEFUL_SHUTDOWN", got)
	}
	// A health change meanwhile does not bring the route back.
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire() // the debounced reconcile and the graceful-shutdown timer
	r.clock.advance(time.Second)
	r.clock.fire()
	r.d.mu.Lock()
	r.d.announceLocked()
	r.d.mu.Unlock()
	if got := sp.state("203.0.113.10"); got != "" {
		t.Fatalf("after the graceful-shutdown wait: %q, want withdrawn", got)
	}
	if st := r.d.Status().BGP; !st.Drained || !strings.Contains(reasonOf(t, r, "203.0.113.10"), "drained") {
		t.Fatalf("status after drain-self: %+v", st)
	}

	// A restart remembers the drain.
	r.start(t, announceYAML)
	sp2 := &fakeSpeaker{}
	r.d.EnableBGP(sp2, *r.d.Config().BGP)
	r.d.SetAttached()
	r.checkResults()
	if got := sp2.state("203.0.113.10"); got != "" || !r.d.Status().BGP.Drained {
		t.Fatalf("after a restart while drained: %q, drained %v", got, r.d.Status().BGP.Drained)
	}
	if err := r.d.UndrainSelf(); err != nil {
		t.Fatal(err)
	}
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire()
	if got := sp2.state("203.0.113.10"); got != "up" {
		t.Fatalf("after undrain-self: %q, want announced", got)
	}
}

func TestLeave(t *testing.T) {
	r, sp := bgpRig(t)
	r.d.opts.Clock = systemClock{} // Leave waits in real time (20ms here)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.d.mu.Lock()
	_ = r.d.reconcileLocked()
	r.d.mu.Unlock()
	r.d.SetAttached()
	r.checkResults()
	if got := sp.state("203.0.113.10"); got != "up" {
		t.Fatalf("before leaving: %q", got)
	}
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.d.Leave(context.Background())
	}()
	for {
		st := sp.state("203.0.113.10")
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		select {
		case <-done:
			if strings.Join(seen, ",") != "up,gshut," && strings.Join(seen, ",") != "gshut," {
				t.Fatalf("route states while leaving: %q, want GRACEFUL_SHUTDOWN then withdrawn", seen)
			}
			if !sp.stopped {
				t.Fatal("the speaker was not stopped")
			}
			return
		default:
			time.Sleep(time.Millisecond)
		}
	}
}

func TestNoBGP(t *testing.T) {
	r := newRig(t, "interface: eth0\n")
	if err := r.d.DrainSelf(); !errors.Is(err, ErrNoBGP) {
		t.Fatalf("DrainSelf without bgp: %v, want ErrNoBGP", err)
	}
	if r.d.Status().BGP != nil {
		t.Fatal("status has a bgp section without bgp")
	}
}

func TestConfigBGPErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"bgp:\n  local_as: 65001\n  router_id: 198.51.100.2\n  peers:\n    - { address: 198.51.100.1, as: 65000, hold_time: 1s }\n",
			"line 5: bgp.peers[0].hold_time: 1s: allowed are whole seconds from 3s"},
		{"bgp:\n  local_as: 65001\n  router_id: nope\n  peers: [{ address: 198.51.100.1, as: 65000 }]\n",
			"line 3: bgp.router_id: \"nope\""},
		{"bgp:\n  local_as: 65001\n  router_id: 198.51.100.2\n  peer: []\n", "field peer not found"},
		{"vips:\n  - address: 203.0.113.10:80/tcp\n    min_healthy: -1\n", "line 3: vips[0].min_healthy: -1: allowed are 1-"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestBGPMetrics(t *testing.T) {
	r, _ := bgpRig(t)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthHealthy)
	r.clock.fire()
	r.d.SetAttached()
	r.checkResults()
	mfs, err := r.d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"xlb_bgp_session_established peer=198.51.100.1": 1,
		"xlb_bgp_announced address=203.0.113.10":        1,
		"xlb_bgp_announced address=203.0.113.20":        0,
		"xlb_bgp_drained":                               0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if err := r.d.DrainSelf(); err != nil {
		t.Fatal(err)
	}
	mfs, _ = r.d.Registry().Gather()
	for _, mf := range mfs {
		if mf.GetName() == "xlb_bgp_drained" && mf.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Errorf("xlb_bgp_drained after drain-self = %v", mf.GetMetric()[0].GetGauge().GetValue())
		}
		if mf.GetName() == "xlb_bgp_announced" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "203.0.113.10" && m.GetGauge().GetValue() != 2 {
					t.Errorf("xlb_bgp_announced for 203.0.113.10 during GRACEFUL_SHUTDOWN = %v, want 2", m.GetGauge().GetValue())
				}
			}
		}
	}
}

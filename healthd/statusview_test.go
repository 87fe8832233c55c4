package healthd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

// TestStatusView: the status page's view of the daemon: each VIP with its
// backends' display state (a drain wins over health), and the datapath's
// exits marked passed or dropped.
func TestStatusView(t *testing.T) {
	r := newRig(t, `
vips:
  - address: 203.0.113.10:80/tcp
    table_size: 251
    check: { kind: tcp, port: 80 }
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12 }
      - { address: 198.51.100.13 }
`)
	r.setHealth("198.51.100.11", HealthHealthy)
	r.setHealth("198.51.100.12", HealthUnhealthy)
	r.setHealth("198.51.100.13", HealthHealthy)
	k, err := api.ParseVIPKey("203.0.113.10:80/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.Drain(k, netip.MustParseAddr("198.51.100.13"), time.Minute); err != nil {
		t.Fatal(err)
	}
	r.dp.Lock()
	r.dp.DropCount["no_vip"] = 5
	r.dp.DropCount["too_big"] = 2
	r.dp.DropCount["icmp_too_big"] = 1
	r.dp.Unlock()

	v := r.d.StatusView()
	if v.Kind != "l4" || len(v.Groups) != 1 || v.Groups[0].Name != "203.0.113.10:80/tcp" || v.Groups[0].Detail != "ipip, 5tuple hash, table 251" {
		t.Fatalf("view: %+v", v)
	}
	want := map[string]string{"198.51.100.11": "up", "198.51.100.12": "down", "198.51.100.13": "draining"}
	for _, m := range v.Groups[0].Members {
		if m.State != want[m.Address] {
			t.Errorf("%s: state %q, want %q", m.Address, m.State, want[m.Address])
		}
	}
	if len(v.Groups[0].Members) != 3 {
		t.Errorf("members: %+v", v.Groups[0].Members)
	}
	drops := map[string]bool{}
	what := map[string]string{}
	for _, d := range v.Drops {
		drops[d.Reason] = d.Passed
		what[d.Reason] = d.What
	}
	if what["no_vip"] != "passed to the kernel" || what["too_big"] != "dropped" || what["icmp_too_big"] != "answered with ICMP too big" {
		t.Errorf("what the exits did: %v", what)
	}
	if passed, ok := drops["no_vip"]; !ok || !passed {
		t.Errorf("no_vip: listed %v, passed %v; want listed as passed", ok, passed)
	}
	if passed, ok := drops["too_big"]; !ok || passed {
		t.Errorf("too_big: listed %v, passed %v; want listed as dropped", ok, passed)
	}
}

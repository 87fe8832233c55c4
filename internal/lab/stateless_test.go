package lab

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestE2EStatelessUDP: real datagrams through a stateless UDP VIP. Datagrams
// from new source ports reach every backend; one socket (one 5-tuple) keeps
// its backend while the table does; when that backend is drained, the
// socket's next datagram goes to another backend at once, where a stateful
// VIP keeps a draining backend's flows (TestE2EDrain).
func TestE2EStatelessUDP(t *testing.T) {
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{StatelessUDP: true})
	vipUDP := fmt.Sprintf("%s:%d/udp", VIP4, EchoPort)
	var vips []struct {
		Address   string `json:"address"`
		Stateless bool   `json:"stateless"`
	}
	if err := json.Unmarshal([]byte(cli(t, l, "lb1", "vip", "list", "-o", "json")), &vips); err != nil {
		t.Fatal(err)
	}
	for _, v := range vips {
		if want := v.Address == vipUDP; v.Stateless != want {
			t.Errorf("vip list: %s stateless %v, want %v", v.Address, v.Stateless, want)
		}
	}

	c := Client{Netns: l.Client.Netns}
	seen := map[string]int{}
	for i := range 60 {
		name, err := c.UDP(echoVIP, fmt.Sprintf("datagram %d", i))
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if len(seen) != len(l.Backends) {
		t.Errorf("60 datagrams from new ports reached %v, want every backend", seen)
	}

	conn, err := c.Dial("udp", echoVIP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func(i int) string {
		t.Helper()
		name, err := exchangeUDP(conn, fmt.Sprintf("socket %d", i), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return name
	}
	first := ask(0)
	for i := 1; i < 5; i++ {
		if got := ask(i); got != first {
			t.Fatalf("datagram %d of one socket went to %s, the first to %s", i, got, first)
		}
	}
	cli(t, l, "lb1", "backend", "drain", vipUDP, addrOf(l, first), "--timeout", "30s")
	testutil.Eventually(t, 10*time.Second, first+" out of the stateless VIP's table", func() bool {
		for _, b := range listBackends(t, l, "lb1", vipUDP) {
			if b.Address == addrOf(l, first) {
				return b.Admin == "draining" && !b.UsableNew
			}
		}
		return false
	})
	moved := ask(5)
	if moved == first {
		t.Fatalf("after draining %s the socket's datagram still went to it: a stateless VIP keeps no flow", first)
	}
	for i := 6; i < 10; i++ {
		if got := ask(i); got != moved {
			t.Errorf("datagram %d went to %s, datagram 5 to %s: one 5-tuple, one table, one backend", i, got, moved)
		}
	}
	t.Logf("new ports reached %v; one socket stayed on %s, moved to %s when it was drained", seen, first, moved)
}

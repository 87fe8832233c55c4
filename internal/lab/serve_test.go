package lab

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestServe runs the echo server in a namespace and talks to it on
// loopback addresses other than the one it would pick itself: a UDP answer
// must come from the address the request went to (as for a VIP on lo), or
// the client's connected socket would not accept it.
func TestServe(t *testing.T) {
	ns := testutil.Netns(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error { return Serve(ctx, ServerConfig{Name: "be9", HTTPPort: 8080, EchoPort: 7007}) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c := Client{Netns: ns, Timeout: time.Second}
	testutil.Eventually(t, 5*time.Second, "echo server", func() bool {
		_, err := c.Hello(netip.MustParseAddrPort("127.0.0.1:7007"))
		return err == nil
	})
	for _, a := range []string{"127.0.0.5", "127.1.2.3", "[::1]"} {
		ap := netip.MustParseAddrPort(a + ":7007")
		if got, err := c.UDP(ap, "ping"); err != nil || got != "be9" {
			t.Errorf("udp %s = %q, %v; want be9", ap, got, err)
		}
		conn, err := c.Open(ap)
		if err != nil {
			t.Fatalf("tcp %s: %v", ap, err)
		}
		if conn.Backend != "be9" {
			t.Errorf("greeting %q, want be9", conn.Backend)
		}
		for _, line := range []string{"one", "two words"} {
			if err := conn.Echo(line); err != nil {
				t.Error(err)
			}
		}
		conn.Close()
		if got, err := c.HTTPGet(ctx, netip.MustParseAddrPort(strings.Replace(ap.String(), ":7007", ":8080", 1))); err != nil || got != "be9" {
			t.Errorf("http %s = %q, %v; want be9", ap, got, err)
		}
	}
}

func TestServeNeedsName(t *testing.T) {
	if err := Serve(context.Background(), ServerConfig{}); err == nil || !strings.Contains(err.Error(), "name: required") {
		t.Fatalf("Serve without a name: %v", err)
	}
}

// TestTrafficDisplay checks the live table and the one-line form.
func TestTrafficDisplay(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start.Add(5 * time.Second)
	window := []sample{{now, "be1"}, {now, "be1"}, {now, "be2"}, {now, ""}}
	res := TrafficResult{Total: map[string]int{"be1": 20, "be2": 10}, Failed: 1, Held: "be2", HeldOK: 9}
	tests := []struct {
		name string
		live bool
		want []string
	}{
		{name: "live", live: true, want: []string{
			"xlb lab: 100 new connections/s to 203.0.113.10:7   5s",
			"be1            2    67%  ████████████████████                20",
			"be2            1    33%  ██████████                          10",
			"be3            0     0%                                       0",
			"failed         1",
			"long-lived connection on be2: 9 echoes answered, ok",
		}},
		{name: "lines", want: []string{"  5.0s  be1  67%  be2  33%  be3   0%  failed 1  held(be2) ok 9 failed 0\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			d := &display{cfg: TrafficConfig{VIP: netip.MustParseAddrPort("203.0.113.10:7"), Rate: 100, Window: 2 * time.Second,
				Backends: []string{"be1", "be2", "be3"}, Hold: true, Out: &out, Live: tt.live}, start: start}
			d.draw(now, window, res)
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("display lacks %q:\n%s", w, out.String())
				}
			}
			if tt.live {
				// A second drawing moves the cursor back over the first.
				out.Reset()
				d.draw(now, window, res)
				if !strings.HasPrefix(out.String(), "\033[") {
					t.Errorf("redraw does not start by moving up: %q", out.String()[:10])
				}
			}
		})
	}
}

package bgp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	return Config{
		LocalAS: 65001, RouterID: "198.51.100.2",
		Peers: []PeerConfig{{Address: "198.51.100.1", AS: 65000, HoldTime: 3 * time.Second}},
	}
}

// Bad input first: each must be refused naming the field and what is allowed.
func TestConfigRejects(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
		want  string
	}{
		{"no local AS", func(c *Config) { c.LocalAS = 0 }, "local_as", "missing"},
		{"router id not IPv4", func(c *Config) { c.RouterID = "2001:db8::1" }, "router_id", "IPv4"},
		{"router id zero", func(c *Config) { c.RouterID = "0.0.0.0" }, "router_id", "other than 0.0.0.0"},
		{"router id empty", func(c *Config) { c.RouterID = "" }, "router_id", "IPv4"},
		{"next hop v4 is v6", func(c *Config) { c.NextHopV4 = "2001:db8::1" }, "next_hop_v4", "IPv4"},
		{"next hop v6 is v4", func(c *Config) { c.NextHopV6 = "198.51.100.2" }, "next_hop_v6", "IPv6"},
		{"next hop v6 mapped", func(c *Config) { c.NextHopV6 = "::ffff:198.51.100.2" }, "next_hop_v6", "IPv6"},
		{"community no colon", func(c *Config) { c.Communities = []string{"65000"} }, "communities[0]", "AS:VALUE"},
		{"community too big", func(c *Config) { c.Communities = []string{"65000:1", "70000:1"} }, "communities[1]", "0-65535"},
		{"community negative", func(c *Config) { c.Communities = []string{"-1:2"} }, "communities[0]", "AS:VALUE"},
		{"gshut wait negative", func(c *Config) { c.GracefulShutdownWait = -time.Second }, "graceful_shutdown_wait", "0 to 1h"},
		{"leave wait huge", func(c *Config) { c.LeaveWait = 2 * time.Hour }, "leave_wait", "0 to 1h"},
		{"no peers", func(c *Config) { c.Peers = nil }, "peers", "at least one"},
		{"peer address bad", func(c *Config) { c.Peers[0].Address = "router" }, "peers[0].address", "unicast"},
		{"peer address multicast", func(c *Config) { c.Peers[0].Address = "224.0.0.5" }, "peers[0].address", "unicast"},
		{"peer address zone", func(c *Config) { c.Peers[0].Address = "fe80::1%eth0" }, "peers[0].address", "unicast"},
		{"peer AS missing", func(c *Config) { c.Peers[0].AS = 0 }, "peers[0].as", "missing"},
		{"local address family", func(c *Config) { c.Peers[0].LocalAddress = "2001:db8::2" }, "peers[0].local_address", "same family"},
		{"password too long", func(c *Config) { c.Peers[0].Password = strings.Repeat("x", 81) }, "peers[0].password", "at most 80"},
		{"hold time 1s", func(c *Config) { c.Peers[0].HoldTime = time.Second }, "peers[0].hold_time", "3s"},
		{"hold time fraction", func(c *Config) { c.Peers[0].HoldTime = 3500 * time.Millisecond }, "peers[0].hold_time", "whole seconds"},
		{"hold time too long", func(c *Config) { c.Peers[0].HoldTime = 70000 * time.Second }, "peers[0].hold_time", "65535s"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "peers[1].address", "already peers[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *FieldError", err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.want) {
				t.Fatalf("Validate() = %q, want field %q and %q in the message", err, tc.field, tc.want)
			}
			if _, err := New(c, nil); err == nil {
				t.Fatal("New accepted a configuration Validate refuses")
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
local_as: 65001
router_id: 198.51.100.2
next_hop_v6: 2001:db8:1::2
communities: ["65001:100"]
graceful_shutdown_wait: 2s
leave_wait: 500ms
peers:
  - address: 198.51.100.1
    as: 65000
    hold_time: 3s
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Peers[0].HoldTime != 3*time.Second || c.LeaveWait != 500*time.Millisecond {
		t.Fatalf("durations decoded as %v, %v", c.Peers[0].HoldTime, c.LeaveWait)
	}
	g, l := c.Waits()
	if g != 2*time.Second || l != 500*time.Millisecond {
		t.Fatalf("Waits() = %v, %v", g, l)
	}
	var d Config
	if g, l := d.Waits(); g != DefaultGracefulShutdownWait || l != DefaultLeaveWait {
		t.Fatalf("default Waits() = %v, %v", g, l)
	}
}

func TestCommunityRoundTrip(t *testing.T) {
	for _, s := range []string{"0:0", "65535:0", "65001:100", "65535:65535"} {
		v, err := ParseCommunity(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatCommunity(v); got != s {
			t.Fatalf("FormatCommunity(ParseCommunity(%q)) = %q", s, got)
		}
	}
	if v, _ := ParseCommunity("65535:0"); v != GracefulShutdown {
		t.Fatalf("65535:0 = %#x, want GRACEFUL_SHUTDOWN %#x", v, GracefulShutdown)
	}
}

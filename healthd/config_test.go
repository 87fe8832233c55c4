package healthd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../testdata/xlb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface != "veth0" || len(c.VIPs) != 2 || len(c.VIPs[0].Backends) != 2 || c.Encap.MTU != 1500 || c.Encap.ICMPRate != 1000 || c.Encap.ICMPBurst != 50 {
		t.Fatalf("unexpected config: %+v", c)
	}
	if c.BGP == nil || c.BGP.LocalAS != 65001 || len(c.BGP.Peers) != 1 || c.BGP.Peers[0].HoldTime != 3*time.Second {
		t.Fatalf("bgp section: %+v", c.BGP)
	}
	s, err := NewState(c)
	if err != nil {
		t.Fatal(err)
	}
	v := s.VIPs[mustKey(t, "203.0.113.10:80/tcp")]
	if v == nil || v.PanicThreshold != 50 || v.TableSize != 65537 {
		t.Fatalf("vip: %+v", v)
	}
	// The backend override keeps the VIP's kind and changes the port.
	if got := checkID(v, v.Backends[1]); !strings.HasPrefix(got, "tcp://198.51.100.12:8080") {
		t.Fatalf("check of overridden backend = %q", got)
	}
}

func TestConfigMaxBackends(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want uint32
	}{
		{"interface: eth0\n", 4096},
		{"max_backends: 200000\n", 200000},
		{"max_backends: 2\nvips:\n  - address: 203.0.113.1:80/tcp\n    backends: [{address: 198.51.100.1}]\n", 2},
	} {
		c, err := ParseConfig([]byte(tt.yaml))
		if err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
			continue
		}
		if got := c.maxBackends(); got != tt.want {
			t.Errorf("%q: max backends %d, want %d", tt.yaml, got, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"unknown key", "interface: eth0\nbogus: 1\n", "line 2: field bogus not found"},
		{"unknown nested key", "vips:\n  - address: 203.0.113.1:80/tcp\n    colour: red\n", "line 3: field colour not found"},
		{"wrong type", "vips:\n  - address: 203.0.113.1:80/tcp\n    table_size: big\n", "line 3"},
		{"bad duration", "vips:\n  - address: 203.0.113.1:80/tcp\n    drain_timeout: soon\n", `line 3: "soon" is not a duration`},
		{"bad vip", "vips:\n  - address: 203.0.113.1/tcp\n", "line 2: vips[0].address"},
		{"bad proto", "vips:\n  - address: 203.0.113.1:80/sctp\n", `protocol "sctp": allowed are tcp, udp`},
		{"non-prime table", "vips:\n  - address: 203.0.113.1:80/tcp\n    table_size: 65536\n", "line 3: vips[0].table_size: 65536 is not a prime"},
		{"unsupported prime", "vips:\n  - address: 203.0.113.1:80/tcp\n    table_size: 7\n", "7 is a prime the datapath does not hold: allowed are 251, 4093, 65537"},
		{"bad mode", "vips:\n  - address: 203.0.113.1:80/tcp\n    mode: nat\n", `vips[0].mode: "nat": allowed are ipip, l2dsr`},
		{"bad hash", "vips:\n  - address: 203.0.113.1:80/tcp\n    hash: md5\n", "vips[0].hash"},
		{"stateless tcp", "vips:\n  - address: 203.0.113.1:80/tcp\n    stateless: true\n", "line 3: vips[0].stateless: only for udp VIPs"},
		{"panic range", "vips:\n  - address: 203.0.113.1:80/tcp\n    panic_threshold: 101\n", "vips[0].panic_threshold: 101"},
		{"duplicate vip", "vips:\n  - address: 203.0.113.1:80/tcp\n  - address: 203.0.113.1:80/tcp\n", "line 3: vips[1].address: 203.0.113.1:80/tcp is already defined by vips[0]"},
		{"bad backend", "vips:\n  - address: 203.0.113.1:80/tcp\n    backends:\n      - address: 198.51.100.300\n", "line 4: vips[0].backends[0].address"},
		{"duplicate backend", "vips:\n  - address: 203.0.113.1:80/tcp\n    backends:\n      - address: 198.51.100.1\n      - address: 198.51.100.1\n", "line 5: vips[0].backends[1].address: 198.51.100.1 is already a backend"},
		{"family mismatch", "vips:\n  - address: 203.0.113.1:80/tcp\n    backends:\n      - address: 2001:db8:1::1\n", "address family must match"},
		{"weight range", "vips:\n  - address: 203.0.113.1:80/tcp\n    backends:\n      - address: 198.51.100.1\n        weight: 5000\n", "line 5: vips[0].backends[0].weight: 5000: allowed are 1-1000"},
		{"check kind", "vips:\n  - address: 203.0.113.1:80/tcp\n    check: { kind: icmp }\n", `vips[0].check.kind: "icmp": allowed are tcp, http, https`},
		{"check kind missing", "vips:\n  - address: 203.0.113.1:80/tcp\n    check: { port: 80 }\n", "vips[0].check.kind: missing"},
		{"check timeout", "vips:\n  - address: 203.0.113.1:80/tcp\n    check: { kind: tcp, interval: 1s, timeout: 2s }\n", "vips[0].check.timeout"},
		{"bad metrics addr", "metrics_addr: localhost\n", "metrics_addr"},
		{"bad encap", "encap: { source_v4: 2001:db8::/64 }\n", "encap.source_v4"},
		{"encap mtu too small", "encap: { mtu: 500 }\n", "line 1: encap.mtu: 500: allowed are 576-65535"},
		{"encap mtu too large", "encap: { mtu: 70000 }\n", "encap.mtu: 70000"},
		{"icmp rate", "encap: { icmp_rate: -2 }\n", "encap.icmp_rate: -2: allowed are 1-1000000 answers per second and CPU, or -1 for none"},
		{"icmp burst", "encap: { icmp_burst: 2000000 }\n", "encap.icmp_burst: 2000000"},
		{"max backends too small", "max_backends: 1\n", "line 1: max_backends: 1: allowed are 2-1048576"},
		{"max backends too large", "max_backends: 2000000\n", "max_backends: 2000000: allowed are 2-1048576"},
		{"max backends negative", "max_backends: -5\n", "line 1"},
		{"drain idle too short", "drain_idle: 500ms\n", "line 1: drain_idle: 500ms: allowed are 1s to 24h"},
		{"drain idle too long", "drain_idle: 48h\n", "drain_idle: 48h0m0s: allowed are 1s to 24h"},
		{"drain idle not a duration", "drain_idle: soon\n", "line 1"},
		{"max backends full", "max_backends: 3\nvips:\n  - address: 203.0.113.1:80/tcp\n    backends: [{address: 198.51.100.1}, {address: 198.51.100.2}]\n  - address: 203.0.113.2:80/tcp\n    backends: [{address: 198.51.100.1}]\n",
			"line 1: max_backends: 3 holds 2 (VIP, backend) pairs, the configuration has 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestBadConfigFiles(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/bad-*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/config/bad-*.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadConfig(f)
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("error = %v, want %q", err, strings.TrimSpace(string(want)))
			}
		})
	}
}

func mustKey(t testing.TB, s string) api.VIPKey {
	t.Helper()
	k, err := api.ParseVIPKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

package fleet

import (
	"strings"
	"testing"
)

func vip() VIP {
	return VIP{
		VIP: "203.0.113.10:7/tcp", TableSize: 65537, Hash: "5tuple", HashSeed: 0x786c6221, Algorithm: 1,
		Backends: []Backend{
			{Address: "198.51.100.12", Weight: 1, Admin: "active"},
			{Address: "198.51.100.11", Weight: 1, Admin: "active"},
		},
		Usable:    []string{"198.51.100.12", "198.51.100.11"},
		Table:     TableDigest([]string{"198.51.100.11", "198.51.100.12", "198.51.100.11"}),
		Announced: true,
	}
}

func fleetOf(edit func(i int, v *VIP)) []Balancer {
	var bs []Balancer
	for i, name := range []string{"lb1", "lb2", "lb3"} {
		v := vip()
		if edit != nil {
			edit(i, &v)
		}
		v.Fill()
		bs = append(bs, Balancer{Name: name, VIPs: []VIP{v}})
	}
	return bs
}

func TestCompareSameFleet(t *testing.T) {
	if d := Compare(fleetOf(nil)); len(d) != 0 {
		t.Fatalf("identical balancers differ: %+v", d)
	}
	// Backend order in the report does not matter.
	bs := fleetOf(func(i int, v *VIP) {
		if i == 1 {
			v.Backends[0], v.Backends[1] = v.Backends[1], v.Backends[0]
			v.Usable[0], v.Usable[1] = v.Usable[1], v.Usable[0]
		}
	})
	if d := Compare(bs); len(d) != 0 {
		t.Fatalf("backend order made a difference: %+v", d)
	}
}

func TestCompareNamesTheReason(t *testing.T) {
	cases := []struct {
		name string
		edit func(i int, v *VIP)
		want string
	}{
		{"weight", func(i int, v *VIP) {
			if i == 2 {
				v.Backends[0].Weight = 2
			}
		}, "weight of 198.51.100.12 differs: lb1 has 1, lb3 has 2"},
		{"table size", func(i int, v *VIP) {
			if i == 1 {
				v.TableSize = 251
			}
		}, "table size differs: lb1 has 65537, lb2 has 251"},
		{"hash seed", func(i int, v *VIP) {
			if i == 1 {
				v.HashSeed = 7
			}
		}, "hash seed differs: lb1 has 0x786c6221, lb2 has 0x7"},
		{"hash mode", func(i int, v *VIP) {
			if i == 1 {
				v.Hash = "src-ip"
			}
		}, "hash mode differs"},
		{"stateless", func(i int, v *VIP) {
			if i == 1 {
				v.Stateless = true
			}
		}, "stateless differs: lb1 has false, lb2 has true"},
		{"algorithm", func(i int, v *VIP) {
			if i == 1 {
				v.Algorithm = 2
			}
		}, "table algorithm version differs"},
		{"backend missing", func(i int, v *VIP) {
			if i == 1 {
				v.Backends = v.Backends[:1]
			}
		}, "backend list differs: 198.51.100.11 only on lb1"},
		{"backend extra", func(i int, v *VIP) {
			if i == 1 {
				v.Backends = append(v.Backends, Backend{Address: "198.51.100.13", Weight: 1, Admin: "active"})
			}
		}, "backend list differs: 198.51.100.13 only on lb2"},
		{"admin", func(i int, v *VIP) {
			if i == 1 {
				v.Backends[0].Admin = "draining"
			}
		}, "admin state of 198.51.100.12 differs"},
		{"usable while announced", func(i int, v *VIP) {
			if i == 2 {
				v.Usable = v.Usable[:1]
				v.Table = TableDigest([]string{"198.51.100.12"})
			}
		}, "usable backends differ (health or admin state): lb1 has 198.51.100.11,198.51.100.12, lb3 has 198.51.100.12"},
		{"table alone", func(i int, v *VIP) {
			if i == 1 {
				v.Table = TableDigest([]string{"x"})
			}
		}, "installed tables differ with the same usable backends"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Compare(fleetOf(tc.edit))
			if len(d) != 1 || d[0].VIP != "203.0.113.10:7/tcp" {
				t.Fatalf("Compare = %+v, want one difference for the VIP", d)
			}
			if !strings.Contains(strings.Join(d[0].Reasons, "; "), tc.want) {
				t.Fatalf("reasons %q, want %q", d[0].Reasons, tc.want)
			}
			if tc.name != "table alone" && strings.Contains(strings.Join(d[0].Reasons, "; "), "same usable backends") {
				t.Fatalf("reasons %q blame the table for a difference in its inputs", d[0].Reasons)
			}
		})
	}
}

func TestCompareIgnoresWithdrawnTables(t *testing.T) {
	// lb3 sees every backend down and withdrew the VIP: it gets none of its
	// traffic, so its (empty) table does not count.
	bs := fleetOf(func(i int, v *VIP) {
		if i == 2 {
			v.Usable, v.Table, v.Announced = nil, "", false
		}
	})
	if d := Compare(bs); len(d) != 0 {
		t.Fatalf("a withdrawn VIP's table counted: %+v", d)
	}
}

func TestCompareMissingVIP(t *testing.T) {
	bs := fleetOf(nil)
	bs[1].VIPs = nil
	d := Compare(bs)
	if len(d) != 1 || !strings.Contains(d[0].Reasons[0], "not configured on lb2") {
		t.Fatalf("Compare = %+v, want the VIP missing on lb2", d)
	}
}

func TestDigests(t *testing.T) {
	a, b := vip(), vip()
	b.Backends[0], b.Backends[1] = b.Backends[1], b.Backends[0]
	a.Fill()
	b.Fill()
	if a.Config != b.Config || len(a.Config) != 16 {
		t.Fatalf("config digests %q, %q: want equal 16-hex digests", a.Config, b.Config)
	}
	b.Backends[0].Weight = 3
	if ConfigDigest(b) == a.Config {
		t.Fatal("a weight change kept the config digest")
	}
	// The table digest separates slot boundaries: "ab","c" is not "a","bc".
	if TableDigest([]string{"ab", "c"}) == TableDigest([]string{"a", "bc"}) {
		t.Fatal("table digest ignores slot boundaries")
	}
	if TableDigest(nil) == TableDigest([]string{""}) {
		t.Fatal("table digest ignores the slot count")
	}
}

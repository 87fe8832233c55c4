// Package fleet compares what several balancers would do with the same
// VIP. Balancers behind ECMP share no state: a flow that moves from one to
// another (a route change, a balancer leaving) keeps its backend only if
// both build the same Maglev table and hash the flow the same way. That
// holds when the table's inputs match: the backend set with weights, the
// table size, the flow hash (mode and seed) and the table algorithm. This
// package digests those inputs and the installed table per VIP and explains
// differences. It is pure: no I/O, nothing of the daemon.
package fleet

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Backend is one backend of a VIP as it enters the table.
type Backend struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// Admin is the backend's admin state (active, draining); draining
	// backends take no slots.
	Admin string `json:"admin"`
}

// VIP is what decides one VIP's table on one balancer.
type VIP struct {
	VIP       string `json:"vip"` // ADDR:PORT/PROTO
	TableSize uint32 `json:"table_size"`
	Hash      string `json:"hash"` // 5tuple | src-ip
	// Stateless: the VIP keeps no flows (UDP), so a balancer that does
	// would keep a flow another one moves.
	Stateless bool      `json:"stateless,omitempty"`
	HashSeed  uint32    `json:"hash_seed"` // the datapath's flow hash seed
	Algorithm int       `json:"algorithm"` // maglev.AlgorithmVersion
	Backends  []Backend `json:"backends"`  // configured, any order
	// Usable are the backends in the installed table (healthy, or all in
	// panic), any order.
	Usable []string `json:"usable"`
	// Table is the digest of the installed table (TableDigest); "" when
	// none is installed.
	Table string `json:"table,omitempty"`
	// Announced is true when the balancer announces the VIP to its
	// routers; only announcing balancers receive its traffic.
	Announced bool `json:"announced"`
	// Config is ConfigDigest of the fields above, filled by Fill.
	Config string `json:"config"`
}

// Fill sorts the backend lists and sets Config.
func (v *VIP) Fill() {
	slices.SortFunc(v.Backends, func(a, b Backend) int { return strings.Compare(a.Address, b.Address) })
	slices.Sort(v.Usable)
	v.Config = ConfigDigest(*v)
}

// ConfigDigest digests what must match across the fleet for v: the
// backend set with weights and admin states, table size, flow hash mode and
// seed, and table algorithm. Backends must be sorted (Fill).
func ConfigDigest(v VIP) string {
	h := sha256.New()
	fmt.Fprintf(h, "xlb-fleet-v1\nvip %s\nsize %d\nhash %s\nseed %d\nalgorithm %d\n", v.VIP, v.TableSize, v.Hash, v.HashSeed, v.Algorithm)
	if v.Stateless { // only then: stateful VIPs keep the digests of earlier builds
		fmt.Fprintf(h, "stateless\n")
	}
	for _, b := range v.Backends {
		fmt.Fprintf(h, "backend %s %d %s\n", b.Address, b.Weight, b.Admin)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// TableDigest digests an installed table: slots[i] is the address of the
// backend owning slot i. Two balancers send a new flow to the same backend
// exactly when their digests match (given the same flow hash).
func TableDigest(slots []string) string {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(slots)))
	h.Write(n[:])
	for _, s := range slots {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Balancer is one balancer's report: its name (how the caller reached it)
// and its VIPs.
type Balancer struct {
	Name string `json:"name"`
	VIPs []VIP  `json:"vips"`
}

// Difference is one VIP that differs across the fleet, with the reasons.
type Difference struct {
	VIP     string   `json:"vip"`
	Reasons []string `json:"reasons"`
}

// Compare checks every VIP of every balancer against the first balancer
// that has it. Config differences always count; installed tables are
// compared among the balancers that announce the VIP (a balancer that
// withdrew it receives none of its traffic). Differences come in VIP order.
func Compare(bs []Balancer) []Difference {
	by := map[string][]*VIP{} // VIP → per balancer (nil when missing)
	for i := range bs {
		for j := range bs[i].VIPs {
			v := &bs[i].VIPs[j]
			if by[v.VIP] == nil {
				by[v.VIP] = make([]*VIP, len(bs))
			}
			by[v.VIP][i] = v
		}
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []Difference
	for _, k := range keys {
		if r := reasons(bs, by[k]); len(r) > 0 {
			out = append(out, Difference{VIP: k, Reasons: r})
		}
	}
	return out
}

func reasons(bs []Balancer, vs []*VIP) []string {
	var out []string
	ref := -1
	for i, v := range vs {
		if v == nil {
			out = append(out, "not configured on "+bs[i].Name)
		} else if ref < 0 {
			ref = i
		}
	}
	r := vs[ref]
	tableRef := -1
	for i, v := range vs {
		if v == nil {
			continue
		}
		if i != ref && v.Config != r.Config {
			// Its table differs as a consequence; the inputs say why.
			out = append(out, configReasons(bs[ref].Name, r, bs[i].Name, v)...)
			continue
		}
		if !v.Announced {
			continue
		}
		if tableRef < 0 {
			tableRef = i
			continue
		}
		t := vs[tableRef]
		if v.Table == t.Table {
			continue
		}
		if !slices.Equal(v.Usable, t.Usable) {
			out = append(out, fmt.Sprintf("usable backends differ (health or admin state): %s has %s, %s has %s",
				bs[tableRef].Name, list(t.Usable), bs[i].Name, list(v.Usable)))
		} else {
			out = append(out, fmt.Sprintf("installed tables differ with the same usable backends: %s %s, %s %s (different xlb versions?)",
				bs[tableRef].Name, orNone(t.Table), bs[i].Name, orNone(v.Table)))
		}
	}
	return out
}

// configReasons names every table input in which b differs from a.
func configReasons(an string, a *VIP, bn string, b *VIP) []string {
	var out []string
	diff := func(what string, x, y any) {
		out = append(out, fmt.Sprintf("%s differs: %s has %v, %s has %v", what, an, x, bn, y))
	}
	if a.TableSize != b.TableSize {
		diff("table size", a.TableSize, b.TableSize)
	}
	if a.Hash != b.Hash {
		diff("hash mode", a.Hash, b.Hash)
	}
	if a.Stateless != b.Stateless {
		diff("stateless", a.Stateless, b.Stateless)
	}
	if a.HashSeed != b.HashSeed {
		diff("hash seed", fmt.Sprintf("%#x", a.HashSeed), fmt.Sprintf("%#x", b.HashSeed))
	}
	if a.Algorithm != b.Algorithm {
		diff("table algorithm version", a.Algorithm, b.Algorithm)
	}
	am, bm := backendMap(a), backendMap(b)
	var only []string
	for _, x := range a.Backends {
		if _, ok := bm[x.Address]; !ok {
			only = append(only, x.Address)
		}
	}
	if len(only) > 0 {
		out = append(out, fmt.Sprintf("backend list differs: %s only on %s", strings.Join(only, ", "), an))
	}
	only = nil
	for _, y := range b.Backends {
		if _, ok := am[y.Address]; !ok {
			only = append(only, y.Address)
		}
	}
	if len(only) > 0 {
		out = append(out, fmt.Sprintf("backend list differs: %s only on %s", strings.Join(only, ", "), bn))
	}
	for _, x := range a.Backends {
		y, ok := bm[x.Address]
		if !ok {
			continue
		}
		if x.Weight != y.Weight {
			diff("weight of "+x.Address, x.Weight, y.Weight)
		}
		if x.Admin != y.Admin {
			diff("admin state of "+x.Address, x.Admin, y.Admin)
		}
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("config digests differ: %s %s, %s %s", an, a.Config, bn, b.Config))
	}
	return out
}

func backendMap(v *VIP) map[string]Backend {
	m := make(map[string]Backend, len(v.Backends))
	for _, b := range v.Backends {
		m[b.Address] = b
	}
	return m
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

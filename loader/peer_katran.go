package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/xlb-project/xlb/maglev"
)

// Katran's XDP balancer (github.com/facebookincubator/katran,
// katran/lib/bpf/balancer.bpf.c), loaded next to xdp_lb by the benchmarks
// when XLB_KATRAN_OBJ names its object (BenchmarkPacketPath,
// BenchmarkXDPCost). Nothing of Katran is in this repository: the object is
// built from Katran's source tree with its default compile-time settings
// (no -D feature flags, as its build_bpf_modules_opensource.sh does without
// -d), run in the tree's root:
//
//	mkdir -p shim/gnu && : > shim/gnu/stubs-32.h
//	clang -O2 -g -target bpf -I. -Ikatran/lib/linux_includes \
//	  -I/usr/include/x86_64-linux-gnu -Ishim \
//	  -Wno-unused-value -Wno-pointer-sign -Wno-compare-distinct-pointer-types \
//	  -c katran/lib/bpf/balancer.bpf.c -o balancer.bpf.o
//
// (the empty stubs-32.h lets glibc's string.h through with -target bpf).
// LoadKatran fills its maps the way its own loader (KatranLb) does for IPv4
// VIPs and IPv4 backends.

// KatranVIP is one of Katran's VIPs: address, port and IP protocol.
type KatranVIP struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

// KatranOptions say what LoadKatran puts into Katran's maps.
type KatranOptions struct {
	// Object is the path of Katran's compiled balancer.bpf.o.
	Object string
	// VIPs get vip_num 0, 1, ... in order, each with the same ring.
	VIPs []KatranVIP
	// Backends are the VIPs' backends (Katran's reals 1..n), equal weights.
	Backends []netip.Addr
	// GatewayMAC is the destination MAC of every forwarded frame (Katran's
	// default gateway, ctl_array[0]).
	GatewayMAC net.HardwareAddr
	// FlowTableSize is the entries of each CPU's flow table (Katran's
	// per-CPU LRU in lru_mapping).
	FlowTableSize uint32
}

// Katran is a loaded Katran balancer with its maps filled.
type Katran struct {
	coll *ebpf.Collection
	lrus []*ebpf.Map
	prog *Program
}

// The layouts of Katran's structs (balancer_structs.h) as its maps hold
// them: vip_definition (address union of 16 bytes, __u16 port in network
// order, __u8 proto, padding), real_definition (address union, __u8
// flags, padding), ctl_value (a MAC in a __u64).
const (
	katranVIPKeyLen   = 20
	katranRealLen     = 20
	katranCtlValueLen = 8
)

// LoadKatran loads Katran's balancer from o.Object and fills vip_map,
// reals, ch_rings (a Maglev ring of the object's RING_SIZE built by
// maglev.Build), ctl_array and one LRU flow table per possible CPU in
// lru_mapping, as Katran's loader does.
func LoadKatran(o KatranOptions) (*Katran, error) {
	if len(o.VIPs) == 0 || len(o.Backends) == 0 || len(o.GatewayMAC) != 6 || o.FlowTableSize == 0 {
		return nil, fmt.Errorf("%w: katran needs VIPs, backends, a 6-byte gateway MAC and a flow table size", ErrInvalid)
	}
	spec, err := ebpf.LoadCollectionSpec(o.Object)
	if err != nil {
		return nil, fmt.Errorf("read katran object %s: %w", o.Object, err)
	}
	for _, name := range []string{"vip_map", "reals", "ch_rings", "ctl_array", "lru_mapping"} {
		if spec.Maps[name] == nil {
			return nil, fmt.Errorf("katran object %s has no map %s", o.Object, name)
		}
	}
	if spec.Programs["balancer_ingress"] == nil {
		return nil, fmt.Errorf("katran object %s has no program balancer_ingress", o.Object)
	}
	// CH_RINGS_SIZE is MAX_VIPS × RING_SIZE.
	maxVIPs := spec.Maps["vip_map"].MaxEntries
	ringSize := spec.Maps["ch_rings"].MaxEntries / maxVIPs
	lruSpec := spec.Maps["lru_mapping"].InnerMap.Copy()
	lruSpec.MaxEntries = o.FlowTableSize
	spec.Maps["lru_mapping"].InnerMap.MaxEntries = o.FlowTableSize

	k := &Katran{}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load katran: %+v", ve)
		}
		return nil, fmt.Errorf("load katran: %w", err)
	}
	k.coll = coll
	k.prog = &Program{prog: coll.Programs["balancer_ingress"]}
	if err := k.fill(o, ringSize, lruSpec); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

func (k *Katran) fill(o KatranOptions, ringSize uint32, lruSpec *ebpf.MapSpec) error {
	m := k.coll.Maps
	var set []maglev.Backend
	for i, addr := range o.Backends {
		if !addr.Is4() {
			return fmt.Errorf("%w: katran backend %s: IPv4 only", ErrInvalid, addr)
		}
		var real [katranRealLen]byte
		a := addr.As4()
		copy(real[:], a[:])
		if err := m["reals"].Put(uint32(i+1), real[:]); err != nil {
			return fmt.Errorf("katran reals[%d]: %w", i+1, err)
		}
		set = append(set, maglev.Backend{Key: addr.String(), Weight: 1})
	}
	ring, err := maglev.Build(set, ringSize)
	if err != nil {
		return fmt.Errorf("katran ring: %w", err)
	}
	for num, vip := range o.VIPs {
		if !vip.Addr.Is4() {
			return fmt.Errorf("%w: katran VIP %s: IPv4 only", ErrInvalid, vip.Addr)
		}
		var key [katranVIPKeyLen]byte
		a := vip.Addr.As4()
		copy(key[:], a[:])
		binary.BigEndian.PutUint16(key[16:], vip.Port)
		key[18] = vip.Proto
		var meta [8]byte // vip_meta: flags 0, vip_num
		binary.NativeEndian.PutUint32(meta[4:], uint32(num))
		if err := m["vip_map"].Put(key[:], meta[:]); err != nil {
			return fmt.Errorf("katran vip_map %s: %w", vip.Addr, err)
		}
		keys := make([]uint32, len(ring))
		values := make([]uint32, len(ring))
		for slot, pos := range ring {
			keys[slot] = uint32(num)*ringSize + uint32(slot)
			values[slot] = pos + 1
		}
		if _, err := m["ch_rings"].BatchUpdate(keys, values, nil); err != nil {
			return fmt.Errorf("katran ch_rings of VIP %d: %w", num, err)
		}
	}
	var ctl [katranCtlValueLen]byte
	copy(ctl[:], o.GatewayMAC)
	if err := m["ctl_array"].Put(uint32(0), ctl[:]); err != nil {
		return fmt.Errorf("katran ctl_array: %w", err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	for cpu := range min(uint32(cpus), m["lru_mapping"].MaxEntries()) {
		lru, err := ebpf.NewMap(lruSpec)
		if err != nil {
			return fmt.Errorf("katran flow table of cpu %d: %w", cpu, err)
		}
		k.lrus = append(k.lrus, lru)
		if err := m["lru_mapping"].Put(cpu, lru); err != nil {
			return fmt.Errorf("katran lru_mapping[%d]: %w", cpu, err)
		}
	}
	return nil
}

// Flows counts the entries of Katran's per-CPU flow tables.
func (k *Katran) Flows() (int, error) {
	n := 0
	for _, lru := range k.lrus {
		var key, value []byte
		it := lru.Iterate()
		for it.Next(&key, &value) {
			n++
		}
		if err := it.Err(); err != nil {
			return 0, fmt.Errorf("read katran flow table: %w", err)
		}
	}
	return n, nil
}

// Program is Katran's balancer_ingress, to attach or run.
func (k *Katran) Program() *Program { return k.prog }

// Close unloads Katran's program and maps.
func (k *Katran) Close() error {
	for _, l := range k.lrus {
		l.Close()
	}
	k.coll.Close()
	return nil
}

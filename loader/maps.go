package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

const (
	familyV4 = 4
	familyV6 = 6

	vipFlagHashSrcOnly = 0x1
	vipFlagStateless   = 0x2
	// slotFlagPending is SLOT_F_PENDING: a flow cache slot holding a
	// SYN's choice that is not in the flow table yet.
	slotFlagPending = 0x1

	backendUsableNew         = 0x1
	backendUsableEstablished = 0x2

	flowCacheBits = 14 // FLOW_CACHE_BITS in bpf/common.h
	flowCacheSize = 1 << flowCacheBits

	configSrc4       = 0x1
	configSrc6       = 0x2
	configRedirect   = 0x4
	configICMPTooBig = 0x8 // CONFIG_F_ICMP_TOO_BIG
	configStateless  = 0x10
)

// ExitReasons names the datapath's non-forwarding exits; ExitReasons[i] is
// entry i+1 of the exits map (enum exit_reason in bpf/common.h, where 0
// means "no exit"). The first six pass the packet to the kernel untouched,
// icmp_too_big answers it (XDP_TX), the others drop it.
var ExitReasons = []string{
	"not_ip",       // pass: neither IPv4 nor IPv6
	"malformed",    // pass: truncated or invalid header
	"other_proto",  // pass: not TCP, UDP or ICMP "too big"
	"no_vip",       // pass: not for a VIP
	"fragment",     // pass: IP fragment (ports unknown)
	"ipv6_ext",     // pass: IPv6 extension header (not parsed)
	"ip_options",   // drop: VIP packet with IPv4 options
	"no_backend",   // drop: VIP without table or usable backend
	"bad_backend",  // drop: backend's family differs from the VIP's
	"too_big",      // drop: larger than the MTU after encapsulation
	"no_source",    // drop: no outer source prefix for the family
	"encap_failed", // drop: no room to add the outer header
	"icmp_too_big", // tx: too big; answered with ICMP "too big"
	"icmp_limited", // drop: too big; the ICMP rate limit was reached
}

// PassingExits is how many of ExitReasons, from the first, pass the packet
// to the kernel; the others drop it.
const PassingExits = 6

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// be16 returns the uint16 whose in-memory bytes are v in network order.
func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func addr16(a netip.Addr) [16]byte {
	var out [16]byte
	if a.Is4() {
		v4 := a.As4()
		copy(out[:], v4[:])
		return out
	}
	return a.As16()
}

func (k VIPKey) validate() error {
	if !k.Addr.IsValid() {
		return fmt.Errorf("%w: vip address %q: want an IPv4 or IPv6 address", ErrInvalid, k.Addr)
	}
	if k.Proto != 6 && k.Proto != 17 {
		return fmt.Errorf("%w: vip protocol %d: want 6 (tcp) or 17 (udp)", ErrInvalid, k.Proto)
	}
	return nil
}

func (k VIPKey) marshal() lbVipKey {
	a := k.Addr.Unmap()
	return lbVipKey{Addr: addr16(a), Port: be16(k.Port), Proto: k.Proto, Family: familyOf(a)}
}

func (v VIP) validate() error {
	if v.ID >= MaxVIPs {
		return fmt.Errorf("%w: vip id %d: want 0..%d", ErrInvalid, v.ID, MaxVIPs-1)
	}
	if v.Mode != ModeIPIP && v.Mode != ModeL2DSR {
		return fmt.Errorf("%w: vip mode %d: want %d (ipip) or %d (l2dsr)", ErrInvalid, v.Mode, ModeIPIP, ModeL2DSR)
	}
	if !slices.Contains(SupportedTableSizes, v.TableSize) {
		return fmt.Errorf("%w: vip table size %d: want one of %v", ErrInvalid, v.TableSize, SupportedTableSizes)
	}
	return nil
}

// PutVIP creates or replaces a VIP. Its retired counters start at zero
// when no other VIP key uses its ID.
func (d *Datapath) PutVIP(k VIPKey, v VIP) error {
	if err := k.validate(); err != nil {
		return err
	}
	if err := v.validate(); err != nil {
		return err
	}
	if v.Stateless && k.Proto != 17 {
		return fmt.Errorf("%w: vip %s port %d proto %d: stateless: only for UDP VIPs (TCP needs its flows kept)", ErrInvalid, k.Addr, k.Port, k.Proto)
	}
	used, err := d.vipIDUsed(v.ID, k)
	if err != nil {
		return err
	}
	if !used {
		if err := d.objs.VipRetired.Put(v.ID, lbCounters{}); err != nil {
			return fmt.Errorf("reset retired counters of vip %d: %w", v.ID, err)
		}
	}
	meta := lbVipMeta{Id: v.ID, TableSize: v.TableSize, Mode: uint8(v.Mode)}
	if v.HashSrcIPOnly {
		meta.Flags |= vipFlagHashSrcOnly
	}
	if v.Stateless {
		meta.Flags |= vipFlagStateless
	}
	key := k.marshal()
	var old lbVipMeta
	existed := d.objs.Vips.Lookup(&key, &old) == nil
	if err := d.setFilterBit(k.Addr); err != nil {
		return err
	}
	if err := d.objs.Vips.Put(&key, &meta); err != nil {
		return fmt.Errorf("put vip %s port %d proto %d: %w", k.Addr, k.Port, k.Proto, err)
	}
	if v.Stateless || existed && old.Flags&vipFlagStateless != 0 {
		if err := d.syncStatelessFlag(); err != nil {
			return err
		}
	}
	// Established flows carry the VIP's ID and mode: when either
	// changes, they select again. A VIP turning stateless drops its flows
	// too: the flow cache, read before the VIP, would keep serving them.
	if existed && (old.Id != meta.Id || old.Mode != meta.Mode || (old.Flags^meta.Flags)&vipFlagStateless != 0) {
		return d.purgeFlows(key, old.Id)
	}
	return nil
}

// ofVIP reports whether the flow fk, selected under VIP ID vipID, belongs
// to the VIP key k with ID id.
func ofVIP(fk lbFlowKey, vipID uint32, k lbVipKey, id uint32) bool {
	return vipID == id && fk.Dst == k.Addr && fk.Proto == k.Proto && (k.Port == 0 || fk.Dport == k.Port)
}

// purgeFlows deletes the flows selected for the VIP key k under VIP ID id,
// so that their next packet goes through the VIP lookup again.
func (d *Datapath) purgeFlows(k lbVipKey, id uint32) error {
	var fk lbFlowKey
	var f lbFlow
	var stale []lbFlowKey
	it := d.objs.Flows.Iterate()
	for it.Next(&fk, &f) {
		if ofVIP(fk, f.VipId, k, id) {
			stale = append(stale, fk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list flows of vip %d: %w", id, err)
	}
	for _, fk := range stale {
		if err := d.objs.Flows.Delete(&fk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove flow of vip %d: %w", id, err)
		}
		if err := d.uncache(fk); err != nil {
			return err
		}
	}
	if err := d.uncachePending(k, id); err != nil {
		return err
	}
	// A flow the flow table has already evicted can still sit in the
	// flow cache, which xdp_lb reads before the VIP filter: the new
	// generation retires every cached copy.
	return d.bumpGen()
}

// uncachePending clears the flow cache slots that hold a SYN's pending
// choice for the VIP key k under VIP ID id: such a flow is not in the flow
// table yet, and its next packet would take the choice whatever the
// generation (bpf/flowcache.h). The cache is read in batches.
func (d *Datapath) uncachePending(k lbVipKey, id uint32) error {
	const chunk = 1024
	idx := make([]uint32, chunk)
	slots := make([]lbFlowCacheSlot, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.FlowCache.BatchLookup(&cursor, idx, slots, nil)
		for _, s := range slots[:n] {
			if s.Flags&slotFlagPending != 0 && ofVIP(s.Key, uint32(s.VipId), k, id) {
				if err := d.uncache(s.Key); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read flow cache: %w", err)
		}
	}
}

// uncache clears the flow cache slot of a flow if it holds that flow. A
// reader racing with the write sees the sequence number change and falls
// back to the flow table.
func (d *Datapath) uncache(fk lbFlowKey) error {
	idx := cacheSlot(fk)
	var slot lbFlowCacheSlot
	if err := d.objs.FlowCache.Lookup(idx, &slot); err != nil {
		return fmt.Errorf("read flow cache: %w", err)
	}
	if slot.Key != fk {
		return nil
	}
	if err := d.objs.FlowCache.Put(idx, &lbFlowCacheSlot{Seq: slot.Seq + 2}); err != nil {
		return fmt.Errorf("clear flow cache: %w", err)
	}
	return nil
}

// cacheSlot is the flow cache slot of a key (cache_slot in
// bpf/flowcache.h): the xor of its five 64-bit native-endian words times
// 0x9e3779b97f4a7c15, top flowCacheBits bits.
func cacheSlot(fk lbFlowKey) uint32 {
	var b [40]byte
	copy(b[0:], fk.Src[:])
	copy(b[16:], fk.Dst[:])
	binary.NativeEndian.PutUint16(b[32:], fk.Sport)
	binary.NativeEndian.PutUint16(b[34:], fk.Dport)
	b[36], b[37] = fk.Proto, fk.Family
	var x uint64
	for i := 0; i < 40; i += 8 {
		x ^= binary.NativeEndian.Uint64(b[i:])
	}
	return uint32((x * 0x9e3779b97f4a7c15) >> (64 - flowCacheBits))
}

// VIPFilterHash is the datapath's hash of a VIP address into the VIP filter
// (bpf/hash.h vip_addr_hash): the xor of the address's 32-bit little-endian
// words times 0x9e3779b9, top 16 bits.
func VIPFilterHash(a netip.Addr) uint32 {
	b := addr16(a.Unmap())
	w := binary.LittleEndian.Uint32(b[0:])
	if !a.Unmap().Is4() {
		w ^= binary.LittleEndian.Uint32(b[4:]) ^ binary.LittleEndian.Uint32(b[8:]) ^ binary.LittleEndian.Uint32(b[12:])
	}
	return (w * 0x9e3779b9) >> 16
}

func (d *Datapath) setFilterBit(a netip.Addr) error {
	bit := VIPFilterHash(a)
	var w uint64
	if err := d.objs.VipFilter.Lookup(bit/64, &w); err != nil {
		return fmt.Errorf("read vip filter: %w", err)
	}
	if w&(1<<(bit%64)) != 0 {
		return nil
	}
	if err := d.objs.VipFilter.Put(bit/64, w|1<<(bit%64)); err != nil {
		return fmt.Errorf("set vip filter: %w", err)
	}
	return nil
}

// clearFilterBit clears the filter bit of a unless another VIP needs it.
func (d *Datapath) clearFilterBit(a netip.Addr) error {
	bit := VIPFilterHash(a)
	vips, err := d.VIPs()
	if err != nil {
		return err
	}
	for k := range vips {
		if VIPFilterHash(k.Addr) == bit {
			return nil
		}
	}
	var w uint64
	if err := d.objs.VipFilter.Lookup(bit/64, &w); err != nil {
		return fmt.Errorf("read vip filter: %w", err)
	}
	if err := d.objs.VipFilter.Put(bit/64, w&^(1<<(bit%64))); err != nil {
		return fmt.Errorf("clear vip filter: %w", err)
	}
	return nil
}

// vipIDUsed reports whether a VIP key other than except has the ID id.
func (d *Datapath) vipIDUsed(id uint32, except VIPKey) (bool, error) {
	var key lbVipKey
	var meta lbVipMeta
	ex := except.marshal()
	it := d.objs.Vips.Iterate()
	for it.Next(&key, &meta) {
		if meta.Id == id && key != ex {
			return true, nil
		}
	}
	if err := it.Err(); err != nil {
		return false, fmt.Errorf("list vips: %w", err)
	}
	return false, nil
}

// RemoveVIP removes a VIP. When no other VIP key uses its ID, its tables
// go too.
func (d *Datapath) RemoveVIP(k VIPKey) error {
	if err := k.validate(); err != nil {
		return err
	}
	key := k.marshal()
	var meta lbVipMeta
	if err := d.objs.Vips.Lookup(&key, &meta); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove vip %s port %d proto %d: %w", k.Addr, k.Port, k.Proto, ErrNotFound)
		}
		return fmt.Errorf("remove vip %s port %d proto %d: %w", k.Addr, k.Port, k.Proto, err)
	}
	if err := d.objs.Vips.Delete(&key); err != nil {
		return fmt.Errorf("remove vip %s port %d proto %d: %w", k.Addr, k.Port, k.Proto, err)
	}
	if err := d.clearFilterBit(k.Addr); err != nil {
		return err
	}
	if meta.Flags&vipFlagStateless != 0 {
		if err := d.syncStatelessFlag(); err != nil {
			return err
		}
	}
	if err := d.purgeFlows(key, meta.Id); err != nil {
		return err
	}
	used, err := d.vipIDUsed(meta.Id, k)
	if err != nil || used {
		return err
	}
	return d.RemoveTable(meta.Id)
}

// VIPs lists the VIPs in the datapath.
func (d *Datapath) VIPs() (map[VIPKey]VIP, error) {
	out := map[VIPKey]VIP{}
	var key lbVipKey
	var meta lbVipMeta
	it := d.objs.Vips.Iterate()
	for it.Next(&key, &meta) {
		var a netip.Addr
		if key.Family == familyV4 {
			a = netip.AddrFrom4([4]byte(key.Addr[:4]))
		} else {
			a = netip.AddrFrom16(key.Addr)
		}
		k := VIPKey{Addr: a, Port: be16(key.Port), Proto: key.Proto}
		out[k] = VIP{ID: meta.Id, Mode: Mode(meta.Mode), HashSrcIPOnly: meta.Flags&vipFlagHashSrcOnly != 0, Stateless: meta.Flags&vipFlagStateless != 0, TableSize: meta.TableSize}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list vips: %w", err)
	}
	return out, nil
}

func (d *Datapath) validBackendID(id uint32) error {
	if id == 0 || id >= d.maxBackends {
		return fmt.Errorf("%w: backend id %d: want 1..%d", ErrInvalid, id, d.maxBackends-1)
	}
	return nil
}

// PutBackend creates or replaces a backend. Its counters start at zero when
// the ID was free.
func (d *Datapath) PutBackend(id uint32, b Backend) error {
	v, err := d.backendValue(id, b)
	if err != nil {
		return err
	}
	if err := d.objs.Backends.Put(id, &v); err != nil {
		return fmt.Errorf("put backend %d: %w", id, err)
	}
	d.written[id/64].Or(uint64(1) << (id % 64))
	return d.bumpGen()
}

// backendValue checks a backend and returns its map value; the first write
// of an ID that was free zeroes its counters.
func (d *Datapath) backendValue(id uint32, b Backend) (lbBackend, error) {
	if err := d.validBackendID(id); err != nil {
		return lbBackend{}, err
	}
	if !b.Addr.IsValid() {
		return lbBackend{}, fmt.Errorf("%w: backend %d address %q: want an IPv4 or IPv6 address", ErrInvalid, id, b.Addr)
	}
	if len(b.MAC) != 6 {
		return lbBackend{}, fmt.Errorf("%w: backend %d mac %q: want a 6-byte Ethernet address", ErrInvalid, id, b.MAC)
	}
	if d.written[id/64].Load()&(uint64(1)<<(id%64)) == 0 {
		var old lbBackend
		if err := d.objs.Backends.Lookup(id, &old); err != nil {
			return lbBackend{}, fmt.Errorf("put backend %d: %w", id, err)
		}
		if old.Family == 0 {
			if err := d.resetCounters(d.objs.BackendStats, id); err != nil {
				return lbBackend{}, err
			}
		}
	}
	a := b.Addr.Unmap()
	v := lbBackend{Addr: addr16(a), Family: familyOf(a)}
	copy(v.Mac[:], b.MAC)
	if b.UsableNew {
		v.Flags |= backendUsableNew
	}
	if b.UsableEstablished || b.UsableNew {
		v.Flags |= backendUsableEstablished
	}
	return v, nil
}

// RemoveBackend clears a backend. Flows on it are re-steered; table slots
// still naming it drop their packets (reason no_backend), so install
// tables without it first.
func (d *Datapath) RemoveBackend(id uint32) error {
	if err := d.validBackendID(id); err != nil {
		return err
	}
	d.written[id/64].And(^(uint64(1) << (id % 64)))
	if err := d.objs.Backends.Put(id, &lbBackend{}); err != nil {
		return fmt.Errorf("remove backend %d: %w", id, err)
	}
	return d.bumpGen()
}

// SetTable installs the Maglev table of a VIP ID: table[slot] is a backend
// ID, 0 for an empty slot, and len(table) one of SupportedTableSizes (the
// VIP's TableSize). An inner map holding the whole table is filled and
// swapped into the hash-of-maps in one update, so a packet sees the old or
// the new table, never a mix; the inner map is new, or one replaced earlier
// that no packet can read any more (tablePool). Calls for different VIP IDs
// may run in parallel; calls for the same VIP ID must not.
func (d *Datapath) SetTable(vipID uint32, table []uint32) error {
	if vipID >= MaxVIPs {
		return fmt.Errorf("%w: vip id %d: want 0..%d", ErrInvalid, vipID, MaxVIPs-1)
	}
	size := uint32(len(table))
	outer, ok := d.tables[size]
	if !ok {
		return fmt.Errorf("%w: table size %d: want one of %v", ErrInvalid, size, SupportedTableSizes)
	}
	for i, id := range table {
		if id >= d.maxBackends {
			return fmt.Errorf("%w: table slot %d: backend id %d: want 0..%d", ErrInvalid, i, id, d.maxBackends-1)
		}
	}
	inner := d.pool.get(size)
	if inner == nil {
		var err error
		if inner, err = ebpf.NewMap(d.inner[size]); err != nil {
			return fmt.Errorf("create table map for vip %d: %w", vipID, err)
		}
	}
	// An mmapable map is filled through the mapping PatchTable will use
	// (writing each page once now spares the patches the page faults of
	// first writes); another with one update, a []uint32 passed as its
	// memory: the native-endian u32 array the value is.
	view, err := newView(inner, size)
	if err == nil {
		copy(view.slots, table)
	} else if err = inner.Put(uint32(0), table); err != nil {
		d.pool.put(size, inner, false)
		return fmt.Errorf("fill table map for vip %d: %w", vipID, err)
	}
	// Hold the table being replaced so that it can be reused (tablePool);
	// without a reference of ours the kernel frees it after the swap.
	var oldID ebpf.MapID
	var old *ebpf.Map
	if outer.Lookup(vipID, &oldID) == nil {
		old, _ = ebpf.NewMapFromID(oldID)
	}
	if err := outer.Put(vipID, inner); err != nil {
		if view != nil {
			view.unmap()
		}
		d.pool.put(size, inner, false)
		if old != nil {
			old.Close()
		}
		return fmt.Errorf("install table for vip %d: %w", vipID, err)
	}
	d.views.drop(vipID)
	if view != nil {
		d.views.keep(vipID, view)
	}
	inner.Close() // the outer map holds it now
	if old != nil {
		d.pool.put(size, old, true)
	}
	return nil
}

// Table reads the installed table of a VIP ID, or ErrNotFound.
func (d *Datapath) Table(vipID uint32) ([]uint32, error) {
	for _, size := range SupportedTableSizes {
		var innerID ebpf.MapID
		if err := d.tables[size].Lookup(vipID, &innerID); err != nil {
			continue
		}
		inner, err := ebpf.NewMapFromID(innerID)
		if err != nil {
			return nil, fmt.Errorf("open table of vip %d: %w", vipID, err)
		}
		buf := make([]byte, 4*size)
		err = inner.Lookup(uint32(0), buf)
		inner.Close()
		if err != nil {
			return nil, fmt.Errorf("read table of vip %d: %w", vipID, err)
		}
		out := make([]uint32, size)
		for i := range out {
			out[i] = binary.NativeEndian.Uint32(buf[4*i:])
		}
		return out, nil
	}
	return nil, fmt.Errorf("table of vip %d: %w", vipID, ErrNotFound)
}

// RemoveTable removes a VIP ID's table of any size.
func (d *Datapath) RemoveTable(vipID uint32) error {
	d.views.drop(vipID)
	for _, size := range SupportedTableSizes {
		if err := d.tables[size].Delete(vipID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove table of vip %d: %w", vipID, err)
		}
	}
	return nil
}

func (d *Datapath) resetCounters(m *ebpf.Map, id uint32) error {
	zero := make([]lbCounters, ebpf.MustPossibleCPU())
	if err := m.Put(id, zero); err != nil {
		return fmt.Errorf("reset counters %d: %w", id, err)
	}
	return nil
}

func sumCounters(m *ebpf.Map, id uint32, max uint32, what string) (Counters, error) {
	if id >= max {
		return Counters{}, fmt.Errorf("%w: %s id %d: want 0..%d", ErrInvalid, what, id, max-1)
	}
	var per []lbCounters
	if err := m.Lookup(id, &per); err != nil {
		return Counters{}, fmt.Errorf("read %s %d counters: %w", what, id, err)
	}
	var c Counters
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
	}
	return c, nil
}

// RetiredCounters reads what the backends removed from VIP id had
// forwarded (RetireBackend). xdp_lb counts per backend only: a VIP's traffic
// is this plus its current backends' BackendCounters.
func (d *Datapath) RetiredCounters(id uint32) (Counters, error) {
	if id >= MaxVIPs {
		return Counters{}, fmt.Errorf("%w: vip id %d: want 0..%d", ErrInvalid, id, MaxVIPs-1)
	}
	var c lbCounters
	if err := d.objs.VipRetired.Lookup(id, &c); err != nil {
		return Counters{}, fmt.Errorf("read retired counters of vip %d: %w", id, err)
	}
	return Counters{Packets: c.Packets, Bytes: c.Bytes}, nil
}

// RetireBackend moves the counters of a removed backend to the retired
// counters of vipID, the VIP it served, so that the VIP's total stays when
// the backend goes. Call it after RemoveBackend and before the ID is used
// again; the backend's counters are zero afterwards, so a second call adds
// nothing.
func (d *Datapath) RetireBackend(vipID, backendID uint32) error {
	r, err := d.RetiredCounters(vipID)
	if err != nil {
		return err
	}
	c, err := d.BackendCounters(backendID)
	if err != nil {
		return err
	}
	sum := lbCounters{Packets: r.Packets + c.Packets, Bytes: r.Bytes + c.Bytes}
	if err := d.objs.VipRetired.Put(vipID, &sum); err != nil {
		return fmt.Errorf("retire backend %d into vip %d: %w", backendID, vipID, err)
	}
	return d.resetCounters(d.objs.BackendStats, backendID)
}

// BackendCounters reads a backend's packets and bytes, summed over CPUs.
func (d *Datapath) BackendCounters(id uint32) (Counters, error) {
	return sumCounters(d.objs.BackendStats, id, d.maxBackends, "backend")
}

// Drops reads the packet count of every non-forwarding exit (ExitReasons),
// summed over CPUs.
func (d *Datapath) Drops() (map[string]uint64, error) {
	out := make(map[string]uint64, len(ExitReasons))
	for i, name := range ExitReasons {
		var per []uint64
		if err := d.objs.Exits.Lookup(uint32(i+1), &per); err != nil {
			return nil, fmt.Errorf("read exit counter %s: %w", name, err)
		}
		var n uint64
		for _, p := range per {
			n += p
		}
		out[name] = n
	}
	return out, nil
}

package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
)

func (c Config) withDefaults() Config {
	if c.HashSeed == 0 {
		c.HashSeed = DefaultHashSeed
	}
	if c.UDPTimeout == 0 {
		c.UDPTimeout = DefaultUDPTimeout
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.ICMPRate == 0 {
		c.ICMPRate = DefaultICMPRate
	}
	if c.ICMPBurst == 0 {
		c.ICMPBurst = DefaultICMPBurst
	}
	return c
}

func (c Config) validate() error {
	if len(c.SourceMAC) != 6 {
		return fmt.Errorf("%w: source mac %q: want a 6-byte Ethernet address", ErrInvalid, c.SourceMAC)
	}
	if c.OuterSource4.IsValid() && !c.OuterSource4.Addr().Is4() {
		return fmt.Errorf("%w: outer source4 %s: want an IPv4 prefix", ErrInvalid, c.OuterSource4)
	}
	if c.OuterSource6.IsValid() && (!c.OuterSource6.Addr().Is6() || c.OuterSource6.Addr().Is4In6()) {
		return fmt.Errorf("%w: outer source6 %s: want an IPv6 prefix", ErrInvalid, c.OuterSource6)
	}
	if c.UDPTimeout < 0 {
		return fmt.Errorf("%w: udp timeout %s: want a positive duration", ErrInvalid, c.UDPTimeout)
	}
	if c.EgressIfindex < 0 {
		return fmt.Errorf("%w: egress ifindex %d: want 0 (none) or an interface index", ErrInvalid, c.EgressIfindex)
	}
	if c.MTU != 0 && c.MTU < 68 {
		return fmt.Errorf("%w: mtu %d: want 68..65535", ErrInvalid, c.MTU)
	}
	if c.ICMPRate > maxICMPRate {
		return fmt.Errorf("%w: icmp rate %d: want 1..%d per second and CPU, or negative for none", ErrInvalid, c.ICMPRate, maxICMPRate)
	}
	if c.ICMPBurst < 0 || c.ICMPBurst > maxICMPBurst {
		return fmt.Errorf("%w: icmp burst %d: want 1..%d", ErrInvalid, c.ICMPBurst, maxICMPBurst)
	}
	return nil
}

// Bounds of the ICMP rate limit.
const (
	maxICMPRate  = 1_000_000
	maxICMPBurst = 1_000_000
)

// icmpLimit is the token bucket of the ICMP "too big" answers
// (bpf/icmp.h); ok is false when answers are off.
func (c Config) icmpLimit() (lim lbIcmpLimit, ok bool) {
	if c.ICMPRate < 0 {
		return lim, false
	}
	lim.CostNs = uint64(time.Second / time.Duration(c.ICMPRate))
	lim.BurstNs = lim.CostNs * uint64(c.ICMPBurst)
	return lim, true
}

// setICMP writes the ICMP rate limit and sets the flag that turns answers
// on in v; the limit is written first, so answers never run on an old one.
func (d *Datapath) setICMP(c Config, v *lbConfig) error {
	lim, ok := c.icmpLimit()
	if !ok {
		return nil
	}
	if err := d.objs.IcmpLimits.Put(uint32(0), &lim); err != nil {
		return fmt.Errorf("set icmp rate limit: %w", err)
	}
	v.Flags |= configICMPTooBig
	return nil
}

// hostMask32 returns the host bits of the last 32 bits of a prefix of
// length bits out of total, as the uint32 whose bytes are the mask in
// network order.
func hostMask32(bits, total int) uint32 {
	var m uint32 = math.MaxUint32
	if net := bits - (total - 32); net > 0 {
		m = math.MaxUint32 >> uint(net)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], m)
	return binary.NativeEndian.Uint32(b[:])
}

// SetConfig sets the datapath-wide configuration; zero fields take their
// defaults. Nothing changes when c is invalid.
func (d *Datapath) SetConfig(c Config) error {
	if err := c.validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	v := lbConfig{
		Mtu:          uint32(c.MTU),
		HashSeed:     c.HashSeed,
		UdpTimeoutNs: uint64(c.UDPTimeout / time.Nanosecond),
	}
	copy(v.SrcMac[:], c.SourceMAC)
	if err := d.setICMP(c, &v); err != nil {
		return err
	}
	if p := c.OuterSource4; p.IsValid() {
		a := p.Masked().Addr().As4()
		v.Src4 = binary.NativeEndian.Uint32(a[:])
		v.Src4Mask = hostMask32(p.Bits(), 32)
		v.Flags |= configSrc4
	}
	if p := c.OuterSource6; p.IsValid() {
		v.Src6 = p.Masked().Addr().As16()
		v.Src6Mask = hostMask32(p.Bits(), 128)
		v.Flags |= configSrc6
	}
	// The devmap entry exists before the flag names it, and the flag is
	// cleared before the entry goes.
	if c.EgressIfindex != 0 {
		if err := d.objs.Egress.Put(uint32(0), uint32(c.EgressIfindex)); err != nil {
			return fmt.Errorf("set egress interface %d: %w", c.EgressIfindex, err)
		}
		v.Flags |= configRedirect
	}
	d.settingsMu.Lock()
	defer d.settingsMu.Unlock()
	var old lbConfig
	if err := d.objs.Settings.Lookup(uint32(0), &old); err != nil {
		return fmt.Errorf("read datapath config: %w", err)
	}
	v.Gen = old.Gen
	v.Flags |= old.Flags & configStateless // the VIPs' business (syncStatelessFlag)
	if err := d.objs.Settings.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("set datapath config: %w", err)
	}
	d.settings, d.settingsOK = v, true
	if c.EgressIfindex == 0 {
		if err := d.objs.Egress.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear egress interface: %w", err)
		}
	}
	return nil
}

// initConfig gives a fresh config map its defaults (an adopted one keeps
// what it holds). Until SetConfig names a source MAC, frames leave with
// source 00:00:00:00:00:00.
func (d *Datapath) initConfig() error {
	var v lbConfig
	if err := d.objs.Settings.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("read datapath config: %w", err)
	}
	if v.Mtu != 0 {
		return nil
	}
	c := Config{}.withDefaults()
	// Generation 1: a zeroed flow cache slot (generation 0) is never used.
	v = lbConfig{Mtu: uint32(c.MTU), HashSeed: c.HashSeed, UdpTimeoutNs: uint64(c.UDPTimeout), Gen: 1}
	if err := d.setICMP(c, &v); err != nil {
		return err
	}
	if err := d.objs.Settings.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("set default datapath config: %w", err)
	}
	return nil
}

// syncStatelessFlag sets CONFIG_F_STATELESS while some VIP is stateless and
// clears it when none is: only then does xdp_lb look a UDP datagram's VIP
// up before the flow table, which every UDP packet missing the flow cache
// would pay otherwise. Either value is safe at any moment (a stateless VIP
// without the flag has its datagrams look for a flow first, in vain).
func (d *Datapath) syncStatelessFlag() error {
	found := false
	var k lbVipKey
	var m lbVipMeta
	it := d.objs.Vips.Iterate()
	for !found && it.Next(&k, &m) {
		found = m.Flags&vipFlagStateless != 0
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list vips: %w", err)
	}
	return d.updateSettings(func(v *lbConfig) {
		v.Flags &^= configStateless
		if found {
			v.Flags |= configStateless
		}
	})
}

// bumpGen raises the generation in the settings map after a backend was
// written: the flow cache's copies of backends (bpf/flowcache.h) taken
// before are no longer used, so the change applies to the next packet of
// every flow. Generation 0 is skipped.
func (d *Datapath) bumpGen() error {
	return d.updateSettings(func(v *lbConfig) {
		v.Gen++
		if v.Gen == 0 {
			v.Gen = 1
		}
	})
}

// updateSettings applies change to the settings map's config.
func (d *Datapath) updateSettings(change func(*lbConfig)) error {
	d.settingsMu.Lock()
	defer d.settingsMu.Unlock()
	if !d.settingsOK { // read once: this Datapath is the map's only writer
		if err := d.objs.Settings.Lookup(uint32(0), &d.settings); err != nil {
			return fmt.Errorf("read datapath config: %w", err)
		}
		d.settingsOK = true
	}
	v := d.settings
	change(&v)
	if err := d.objs.Settings.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("write datapath config: %w", err)
	}
	d.settings = v
	return nil
}

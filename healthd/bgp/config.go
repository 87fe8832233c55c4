// Package bgp announces the balancer's VIPs to routers with BGP, so that a
// fleet of balancers can sit behind ECMP routes. It embeds GoBGP as a
// library (no gRPC API is opened) and knows nothing of VIP health: the
// daemon decides what is servable and hands the speaker the set of
// addresses to announce (Speaker.Sync).
package bgp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults of the BGP configuration.
const (
	DefaultHoldTime             = 90 * time.Second
	DefaultPort                 = 179
	DefaultGracefulShutdownWait = 5 * time.Second
	DefaultLeaveWait            = 10 * time.Second
	// MinHoldTime is the smallest non-zero hold time RFC 4271 allows.
	MinHoldTime = 3 * time.Second
)

// GracefulShutdown is the well-known GRACEFUL_SHUTDOWN community 65535:0
// (RFC 8326): a router that honours it lowers the route's preference, so
// traffic moves to the other balancers before the route is withdrawn.
const GracefulShutdown uint32 = 0xFFFF0000

// Config is the BGP section of the daemon's configuration. Durations are
// YAML strings such as 3s.
type Config struct {
	LocalAS  uint32 `yaml:"local_as" json:"local_as"`   // required
	RouterID string `yaml:"router_id" json:"router_id"` // required, an IPv4 address
	// ListenPort accepts sessions on this port; default 0: none, the
	// speaker only connects out (routers then need no passive setting).
	ListenPort uint16 `yaml:"listen_port,omitempty" json:"listen_port,omitempty"`
	// NextHopV4 and NextHopV6 are the next hops of IPv4 and IPv6 routes;
	// default: the local address of each session. IPv6 VIPs announced over
	// IPv4 sessions need NextHopV6.
	NextHopV4 string `yaml:"next_hop_v4,omitempty" json:"next_hop_v4,omitempty"`
	NextHopV6 string `yaml:"next_hop_v6,omitempty" json:"next_hop_v6,omitempty"`
	// Communities are attached to every route, as "AS:VALUE".
	Communities []string `yaml:"communities,omitempty" json:"communities,omitempty"`
	// GracefulShutdownWait is how long a leave keeps the routes announced
	// with GRACEFUL_SHUTDOWN before withdrawing them; default 5s.
	GracefulShutdownWait time.Duration `yaml:"graceful_shutdown_wait,omitempty" json:"graceful_shutdown_wait,omitempty"`
	// LeaveWait is how long a leave keeps forwarding after the withdrawal,
	// for packets routers still send; default 10s.
	LeaveWait time.Duration `yaml:"leave_wait,omitempty" json:"leave_wait,omitempty"`
	Peers     []PeerConfig  `yaml:"peers" json:"peers"`
}

// PeerConfig is one BGP neighbour (a router).
type PeerConfig struct {
	Address string `yaml:"address" json:"address"`               // required
	AS      uint32 `yaml:"as" json:"as"`                         // required; equal to local_as means iBGP
	Port    uint16 `yaml:"port,omitempty" json:"port,omitempty"` // default 179
	// LocalAddress is the session's source address; default: the
	// kernel's choice.
	LocalAddress string `yaml:"local_address,omitempty" json:"local_address,omitempty"`
	// Password enables TCP MD5 signatures (RFC 2385); default none.
	Password string `yaml:"password,omitempty" json:"-"`
	// HoldTime is the proposed hold time, whole seconds from 3s; default
	// 90s. Keepalives go every third of it.
	HoldTime time.Duration `yaml:"hold_time,omitempty" json:"hold_time,omitempty"`
}

// FieldError is bad configuration: the field (relative to the BGP section),
// its value and what is allowed.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the configuration; the error is a *FieldError.
func (c *Config) Validate() error {
	if c.LocalAS == 0 {
		return fieldErr("local_as", "missing: allowed are 1-4294967295")
	}
	if a, err := netip.ParseAddr(c.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		return fieldErr("router_id", "%q: allowed is an IPv4 address other than 0.0.0.0", c.RouterID)
	}
	if c.NextHopV4 != "" {
		if a, err := netip.ParseAddr(c.NextHopV4); err != nil || !a.Is4() || a.IsUnspecified() {
			return fieldErr("next_hop_v4", "%q: allowed is an IPv4 address other than 0.0.0.0", c.NextHopV4)
		}
	}
	if c.NextHopV6 != "" {
		if a, err := netip.ParseAddr(c.NextHopV6); err != nil || !a.Is6() || a.Is4In6() || a.IsUnspecified() {
			return fieldErr("next_hop_v6", "%q: allowed is an IPv6 address other than ::", c.NextHopV6)
		}
	}
	for i, s := range c.Communities {
		if _, err := ParseCommunity(s); err != nil {
			return fieldErr(fmt.Sprintf("communities[%d]", i), "%v", err)
		}
	}
	if c.GracefulShutdownWait < 0 || c.GracefulShutdownWait > time.Hour {
		return fieldErr("graceful_shutdown_wait", "%s: allowed are 0 to 1h", c.GracefulShutdownWait)
	}
	if c.LeaveWait < 0 || c.LeaveWait > time.Hour {
		return fieldErr("leave_wait", "%s: allowed are 0 to 1h", c.LeaveWait)
	}
	if len(c.Peers) == 0 {
		return fieldErr("peers", "missing: at least one peer is needed")
	}
	seen := map[netip.Addr]int{}
	for i := range c.Peers {
		field := fmt.Sprintf("peers[%d]", i)
		a, err := c.Peers[i].validate(field)
		if err != nil {
			return err
		}
		if j, dup := seen[a]; dup {
			return fieldErr(field+".address", "%s is already peers[%d]", a, j)
		}
		seen[a] = i
	}
	return nil
}

func (p *PeerConfig) validate(field string) (netip.Addr, error) {
	a, err := netip.ParseAddr(p.Address)
	if err != nil || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return netip.Addr{}, fieldErr(field+".address", "%q: allowed is a unicast IPv4 or IPv6 address", p.Address)
	}
	if p.AS == 0 {
		return netip.Addr{}, fieldErr(field+".as", "missing: allowed are 1-4294967295")
	}
	if p.LocalAddress != "" {
		l, err := netip.ParseAddr(p.LocalAddress)
		if err != nil || l.Is4() != a.Is4() || l.IsUnspecified() {
			return netip.Addr{}, fieldErr(field+".local_address", "%q: allowed is an address of the same family as %s", p.LocalAddress, a)
		}
	}
	if len(p.Password) > 80 {
		return netip.Addr{}, fieldErr(field+".password", "%d bytes: allowed are at most 80 (TCP MD5 key)", len(p.Password))
	}
	h := p.HoldTime
	if h < 0 || (h != 0 && h < MinHoldTime) || h > 65535*time.Second || h%time.Second != 0 {
		return netip.Addr{}, fieldErr(field+".hold_time", "%s: allowed are whole seconds from 3s to 65535s", h)
	}
	return a, nil
}

// ParseCommunity reads a standard community "AS:VALUE" (each 0-65535).
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q: allowed is AS:VALUE, each 0-65535", s)
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q: allowed is AS:VALUE, each 0-65535", s)
	}
	return uint32(h)<<16 | uint32(l), nil
}

// FormatCommunity writes a standard community as "AS:VALUE".
func FormatCommunity(c uint32) string {
	return strconv.FormatUint(uint64(c>>16), 10) + ":" + strconv.FormatUint(uint64(c&0xffff), 10)
}

// holdTime is HoldTime or its default.
func (p *PeerConfig) holdTime() time.Duration {
	if p.HoldTime == 0 {
		return DefaultHoldTime
	}
	return p.HoldTime
}

// gracefulShutdownWait and leaveWait are the waits or their defaults.
func (c *Config) gracefulShutdownWait() time.Duration {
	if c.GracefulShutdownWait == 0 {
		return DefaultGracefulShutdownWait
	}
	return c.GracefulShutdownWait
}

func (c *Config) leaveWait() time.Duration {
	if c.LeaveWait == 0 {
		return DefaultLeaveWait
	}
	return c.LeaveWait
}

// Waits returns the graceful-shutdown and leave waits with defaults applied.
func (c *Config) Waits() (gracefulShutdown, leave time.Duration) {
	return c.gracefulShutdownWait(), c.leaveWait()
}

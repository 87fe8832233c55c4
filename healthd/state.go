package healthd

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// AdminState is what an operator decided for a backend.
type AdminState string

// Admin states (DESIGN.md, Backend lifecycle). A removed backend leaves the
// state; there is no "removed" value.
const (
	Active   AdminState = "active"
	Draining AdminState = "draining"
)

// Errors a caller can act on.
var (
	ErrUnknownVIP     = errors.New("unknown VIP")
	ErrDuplicateVIP   = errors.New("VIP already exists")
	ErrUnknownBackend = errors.New("unknown backend")
	ErrDuplicate      = errors.New("backend already exists")
)

// VIP is the desired state of one VIP.
type VIP struct {
	Key            VIPKey
	Mode           string // ipip | l2dsr
	Hash           string // 5tuple | src-ip
	TableSize      uint32
	PanicThreshold int // percent; 0 disables
	DrainTimeout   time.Duration
	Check          *CheckConfig // nil: backends are not checked and count as healthy
	Backends       []*Backend   // sorted by address
}

// Backend is the desired state of one backend of a VIP.
type Backend struct {
	Addr         netip.Addr
	Weight       uint32
	Check        *CheckConfig // override of the VIP's check, as configured
	Admin        AdminState
	DrainStart   time.Time     // when draining began
	DrainTimeout time.Duration // removed at DrainStart+DrainTimeout at the latest
	checkID      string        // of the effective check; "" unchecked
}

// State is the desired state: every VIP with its backends.
type State struct {
	VIPs map[VIPKey]*VIP
}

// NewState builds the desired state of a validated configuration.
func NewState(c *Config) (*State, error) {
	s := &State{VIPs: map[VIPKey]*VIP{}}
	for i := range c.VIPs {
		if err := s.AddVIP(c.VIPs[i]); err != nil {
			return nil, fmt.Errorf("vips[%d]: %w", i, err)
		}
	}
	return s, nil
}

// Clone returns a deep copy, so a change can be tried and thrown away.
func (s *State) Clone() *State {
	c := &State{VIPs: make(map[VIPKey]*VIP, len(s.VIPs))}
	for k, v := range s.VIPs {
		nv := *v
		nv.Backends = make([]*Backend, len(v.Backends))
		for i, b := range v.Backends {
			nb := *b
			nv.Backends[i] = &nb
		}
		c.VIPs[k] = &nv
	}
	return c
}

// SortedVIPs lists the VIPs in address order.
func (s *State) SortedVIPs() []*VIP {
	out := make([]*VIP, 0, len(s.VIPs))
	for _, v := range s.VIPs {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *VIP) int {
		if a.Key.Less(b.Key) {
			return -1
		}
		if b.Key.Less(a.Key) {
			return 1
		}
		return 0
	})
	return out
}

// VIP returns a VIP or ErrUnknownVIP.
func (s *State) VIP(k VIPKey) (*VIP, error) {
	v, ok := s.VIPs[k]
	if !ok {
		return nil, fmt.Errorf("vip %s: %w", k, ErrUnknownVIP)
	}
	return v, nil
}

// Backend returns a backend of a VIP or an error naming what is missing.
func (s *State) Backend(k VIPKey, a netip.Addr) (*VIP, *Backend, error) {
	v, err := s.VIP(k)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range v.Backends {
		if b.Addr == a {
			return v, b, nil
		}
	}
	return v, nil, fmt.Errorf("backend %s of vip %s: %w", a, k, ErrUnknownBackend)
}

// AddVIP validates and adds a VIP with its backends.
func (s *State) AddVIP(c VIPConfig) error {
	k, err := c.validate("vip")
	if err != nil {
		return err
	}
	if _, ok := s.VIPs[k]; ok {
		return fmt.Errorf("vip %s: %w", k, ErrDuplicateVIP)
	}
	v := &VIP{
		Key:            k,
		Mode:           orDefault(c.Mode, "ipip"),
		Hash:           orDefault(c.Hash, "5tuple"),
		TableSize:      c.TableSize,
		PanicThreshold: DefaultPanicThreshold,
		DrainTimeout:   time.Duration(c.DrainTimeout),
		Check:          c.Check,
	}
	if v.TableSize == 0 {
		v.TableSize = DefaultTableSize
	}
	if c.PanicThreshold != nil {
		v.PanicThreshold = *c.PanicThreshold
	}
	if v.DrainTimeout == 0 {
		v.DrainTimeout = DefaultDrainTimeout
	}
	if v.Check != nil {
		cc := *v.Check
		v.Check = &cc
	}
	for _, bc := range c.Backends {
		b := newBackend(bc)
		b.checkID = checkID(v, b)
		v.Backends = append(v.Backends, b)
	}
	sortBackends(v.Backends)
	s.VIPs[k] = v
	return nil
}

// RemoveVIP removes a VIP and its backends.
func (s *State) RemoveVIP(k VIPKey) error {
	if _, err := s.VIP(k); err != nil {
		return err
	}
	delete(s.VIPs, k)
	return nil
}

// AddBackend validates and adds a backend to a VIP.
func (s *State) AddBackend(k VIPKey, c BackendConfig) error {
	v, err := s.VIP(k)
	if err != nil {
		return err
	}
	a, err := c.validate("backend", v.Check != nil)
	if err != nil {
		return err
	}
	if a.Is4() != k.Addr.Is4() {
		return fieldErr("backend.address", "%s: the backend's address family must match the VIP's (%s)", a, k.Addr)
	}
	if c.Check != nil && v.Check == nil && c.Check.Kind == "" {
		return fieldErr("backend.check.kind", "missing: the VIP has no check to inherit; allowed are tcp, http, https")
	}
	for _, b := range v.Backends {
		if b.Addr == a {
			return fmt.Errorf("backend %s of vip %s: %w", a, k, ErrDuplicate)
		}
	}
	b := newBackend(c)
	b.checkID = checkID(v, b)
	v.Backends = append(v.Backends, b)
	sortBackends(v.Backends)
	return nil
}

// RemoveBackend removes a backend at once (no drain).
func (s *State) RemoveBackend(k VIPKey, a netip.Addr) error {
	v, _, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	v.Backends = slices.DeleteFunc(v.Backends, func(b *Backend) bool { return b.Addr == a })
	return nil
}

// SetWeight changes a backend's weight.
func (s *State) SetWeight(k VIPKey, a netip.Addr, w uint32) error {
	if w < 1 || w > MaxWeight {
		return fieldErr("weight", "%d: allowed are 1-%d", w, MaxWeight)
	}
	_, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	b.Weight = w
	return nil
}

// Drain stops new flows to a backend; it is removed after timeout (0: the
// VIP's drain timeout) or once idle.
func (s *State) Drain(k VIPKey, a netip.Addr, timeout time.Duration, now time.Time) error {
	if timeout < 0 {
		return fieldErr("timeout", "%s: allowed is a positive duration", timeout)
	}
	v, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	if timeout == 0 {
		timeout = v.DrainTimeout
	}
	b.Admin = Draining
	b.DrainStart = now
	b.DrainTimeout = timeout
	return nil
}

// Undrain makes a draining backend active again.
func (s *State) Undrain(k VIPKey, a netip.Addr) error {
	_, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	if b.Admin != Draining {
		return fieldErr("backend", "%s of vip %s is %s, not draining", a, k, b.Admin)
	}
	b.Admin = Active
	b.DrainStart = time.Time{}
	b.DrainTimeout = 0
	return nil
}

func newBackend(c BackendConfig) *Backend {
	a, _ := ParseBackendAddr(c.Address)
	b := &Backend{Addr: a, Weight: c.Weight, Admin: Active}
	if b.Weight == 0 {
		b.Weight = 1
	}
	if c.Check != nil {
		cc := *c.Check
		b.Check = &cc
	}
	return b
}

func sortBackends(bs []*Backend) {
	slices.SortFunc(bs, func(a, b *Backend) int { return a.Addr.Compare(b.Addr) })
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// config returns the VIP as configuration, without backends.
func (v *VIP) config() VIPConfig {
	pt := v.PanicThreshold
	c := VIPConfig{
		Address:        v.Key.String(),
		Mode:           v.Mode,
		TableSize:      v.TableSize,
		Hash:           v.Hash,
		PanicThreshold: &pt,
		DrainTimeout:   Duration(v.DrainTimeout),
	}
	if v.Check != nil {
		cc := *v.Check
		c.Check = &cc
	}
	return c
}

func (b *Backend) config() BackendConfig {
	c := BackendConfig{Address: b.Addr.String(), Weight: b.Weight}
	if b.Check != nil {
		cc := *b.Check
		c.Check = &cc
	}
	return c
}

// checkFor returns the effective check of a backend, nil when unchecked.
func (v *VIP) checkFor(b *Backend) *CheckConfig {
	var c *CheckConfig
	switch {
	case v.Check != nil:
		c = v.Check.merge(b.Check)
	case b.Check != nil:
		c = b.Check.merge(nil)
	default:
		return nil
	}
	if c.Port == 0 {
		c.Port = v.Key.Port
	}
	return c
}

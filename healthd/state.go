package healthd

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
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
	Key            api.VIPKey
	Mode           string // ipip | l2dsr
	Hash           string // 5tuple | src-ip
	Stateless      bool   // UDP: no flow state (api.VIPConfig)
	TableSize      uint32
	PanicThreshold int // percent; 0 disables
	DrainTimeout   time.Duration
	Check          *api.CheckConfig // nil: backends are not checked and count as healthy
	Backends       []*Backend       // sorted by address
	Announce       bool             // over BGP, while servable
	MinHealthy     int              // healthy backends that make it servable
}

// Backend is the desired state of one backend of a VIP.
type Backend struct {
	Addr         netip.Addr
	Weight       uint32
	Check        *api.CheckConfig // override of the VIP's check, as configured
	Admin        api.AdminState
	DrainStart   time.Time     // when draining began
	DrainTimeout time.Duration // removed at DrainStart+DrainTimeout at the latest
	checkID      string        // of the effective check; "" unchecked
}

// State is the desired state: every VIP with its backends.
type State struct {
	VIPs map[api.VIPKey]*VIP
}

// NewState builds the desired state of a validated configuration.
func NewState(c *Config) (*State, error) {
	s := &State{VIPs: map[api.VIPKey]*VIP{}}
	for i := range c.VIPs {
		if err := s.AddVIP(c.VIPs[i]); err != nil {
			return nil, fmt.Errorf("vips[%d]: %w", i, err)
		}
	}
	return s, nil
}

// Clone returns a deep copy, so a change can be tried and thrown away.
func (s *State) Clone() *State {
	c := &State{VIPs: make(map[api.VIPKey]*VIP, len(s.VIPs))}
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
func (s *State) VIP(k api.VIPKey) (*VIP, error) {
	v, ok := s.VIPs[k]
	if !ok {
		return nil, fmt.Errorf("vip %s: %w", k, ErrUnknownVIP)
	}
	return v, nil
}

// Backend returns a backend of a VIP or an error naming what is missing.
func (s *State) Backend(k api.VIPKey, a netip.Addr) (*VIP, *Backend, error) {
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
func (s *State) AddVIP(c api.VIPConfig) error {
	k, err := c.ValidateAt("vip")
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
		Stateless:      c.Stateless,
		TableSize:      c.TableSize,
		PanicThreshold: api.DefaultPanicThreshold,
		DrainTimeout:   time.Duration(c.DrainTimeout),
		Check:          c.Check,
		Announce:       c.Announce == nil || *c.Announce,
		MinHealthy:     max(c.MinHealthy, 1),
	}
	if v.TableSize == 0 {
		v.TableSize = api.DefaultTableSize
	}
	if c.PanicThreshold != nil {
		v.PanicThreshold = *c.PanicThreshold
	}
	if v.DrainTimeout == 0 {
		v.DrainTimeout = api.DefaultDrainTimeout
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
func (s *State) RemoveVIP(k api.VIPKey) error {
	if _, err := s.VIP(k); err != nil {
		return err
	}
	delete(s.VIPs, k)
	return nil
}

// AddBackend validates and adds a backend to a VIP.
func (s *State) AddBackend(k api.VIPKey, c api.BackendConfig) error {
	v, err := s.VIP(k)
	if err != nil {
		return err
	}
	a, err := c.ValidateAt("backend", v.Check != nil)
	if err != nil {
		return err
	}
	if a.Is4() != k.Addr.Is4() {
		return api.FieldErr("backend.address", "%s: the backend's address family must match the VIP's (%s)", a, k.Addr)
	}
	if c.Check != nil && v.Check == nil && c.Check.Kind == "" {
		return api.FieldErr("backend.check.kind", "missing: the VIP has no check to inherit; allowed are tcp, http, https")
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
func (s *State) RemoveBackend(k api.VIPKey, a netip.Addr) error {
	v, _, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	v.Backends = slices.DeleteFunc(v.Backends, func(b *Backend) bool { return b.Addr == a })
	return nil
}

// SetWeight changes a backend's weight.
func (s *State) SetWeight(k api.VIPKey, a netip.Addr, w uint32) error {
	if w < 1 || w > api.MaxWeight {
		return api.FieldErr("weight", "%d: allowed are 1-%d", w, api.MaxWeight)
	}
	_, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	b.Weight = w
	return nil
}

func newBackend(c api.BackendConfig) *Backend {
	a, _ := api.ParseBackendAddr(c.Address)
	b := &Backend{Addr: a, Weight: c.Weight, Admin: api.Active}
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
func (v *VIP) config() api.VIPConfig {
	pt := v.PanicThreshold
	c := api.VIPConfig{
		Address:        v.Key.String(),
		Mode:           v.Mode,
		TableSize:      v.TableSize,
		Hash:           v.Hash,
		Stateless:      v.Stateless,
		PanicThreshold: &pt,
		DrainTimeout:   api.Duration(v.DrainTimeout),
		MinHealthy:     v.MinHealthy,
	}
	if !v.Announce {
		c.Announce = &v.Announce
	}
	if v.Check != nil {
		cc := *v.Check
		c.Check = &cc
	}
	return c
}

func (b *Backend) config() api.BackendConfig {
	c := api.BackendConfig{Address: b.Addr.String(), Weight: b.Weight}
	if b.Check != nil {
		cc := *b.Check
		c.Check = &cc
	}
	return c
}

// checkFor returns the effective check of a backend, nil when unchecked.
func (v *VIP) checkFor(b *Backend) *api.CheckConfig {
	var c *api.CheckConfig
	switch {
	case v.Check != nil:
		c = v.Check.Merge(b.Check)
	case b.Check != nil:
		c = b.Check.Merge(nil)
	default:
		return nil
	}
	if c.Port == 0 {
		c.Port = v.Key.Port
	}
	return c
}

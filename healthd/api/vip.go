package api

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// Defaults and limits of a VIP and its backends.
const (
	DefaultTableSize      = 65537
	DefaultPanicThreshold = 50
	DefaultDrainTimeout   = 30 * time.Second
	MaxWeight             = 1000
	MaxMinHealthy         = 10000
)

// VIPConfig is one VIP in the configuration and in API requests.
type VIPConfig struct {
	Address        string          `yaml:"address" json:"address"`
	Mode           string          `yaml:"mode,omitempty" json:"mode,omitempty"`                       // ipip (default) | l2dsr
	TableSize      uint32          `yaml:"table_size,omitempty" json:"table_size,omitempty"`           // a prime; default 65537
	Hash           string          `yaml:"hash,omitempty" json:"hash,omitempty"`                       // 5tuple (default) | src-ip
	Stateless      bool            `yaml:"stateless,omitempty" json:"stateless,omitempty"`             // UDP only: no flow state, each datagram placed by the table
	PanicThreshold *int            `yaml:"panic_threshold,omitempty" json:"panic_threshold,omitempty"` // percent; default 50; 0 disables
	DrainTimeout   Duration        `yaml:"drain_timeout,omitempty" json:"drain_timeout,omitempty"`     // default 30s
	Check          *CheckConfig    `yaml:"check,omitempty" json:"check,omitempty"`                     // none: backends count as healthy
	Backends       []BackendConfig `yaml:"backends,omitempty" json:"backends,omitempty"`
	// Announce: the VIP's address is announced over BGP while the VIP is
	// servable; default true. An address is announced when every VIP on
	// it that announces is servable.
	Announce *bool `yaml:"announce,omitempty" json:"announce,omitempty"`
	// MinHealthy is how many healthy backends make the VIP servable;
	// default 1.
	MinHealthy int `yaml:"min_healthy,omitempty" json:"min_healthy,omitempty"`
}

// BackendConfig is one backend of a VIP.
type BackendConfig struct {
	Address string       `yaml:"address" json:"address"`
	Weight  uint32       `yaml:"weight,omitempty" json:"weight,omitempty"` // 1-1000; default 1
	Check   *CheckConfig `yaml:"check,omitempty" json:"check,omitempty"`   // overrides the VIP's check field by field
}

// CheckConfig is a health check. A backend's check overrides the VIP's field
// by field.
type CheckConfig struct {
	Kind     string   `yaml:"kind,omitempty" json:"kind,omitempty"` // tcp | http | https
	Port     uint16   `yaml:"port,omitempty" json:"port,omitempty"` // default the VIP's port
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	Timeout  Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Rise     int      `yaml:"rise,omitempty" json:"rise,omitempty"`
	Fall     int      `yaml:"fall,omitempty" json:"fall,omitempty"`
	Path     string   `yaml:"path,omitempty" json:"path,omitempty"` // http(s) only
	Host     string   `yaml:"host,omitempty" json:"host,omitempty"` // http(s) only
}

// FieldError is bad user input: the field, its value and what is allowed.
// Line is the configuration line, 0 when not from a file.
type FieldError struct {
	Field string
	Line  int
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	}
	return e.Field + ": " + e.Msg
}

// FieldErr returns a FieldError with a formatted message.
func FieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks a VIP as the API would, so that a client can refuse bad
// input before it contacts the daemon.
func (v *VIPConfig) Validate() error {
	_, err := v.ValidateAt("vip")
	return err
}

// ValidateAt is Validate with the field path of the VIP in the
// configuration (such as "vips[2]"); it returns the parsed address.
func (v *VIPConfig) ValidateAt(field string) (VIPKey, error) {
	k, err := ParseVIPKey(v.Address)
	if err != nil {
		return VIPKey{}, FieldErr(field+".address", "%v", err)
	}
	switch v.Mode {
	case "", "ipip", "l2dsr":
	default:
		return VIPKey{}, FieldErr(field+".mode", "%q: allowed are ipip, l2dsr", v.Mode)
	}
	if v.TableSize != 0 {
		if err := checkTableSize(v.TableSize); err != nil {
			return VIPKey{}, FieldErr(field+".table_size", "%v", err)
		}
	}
	switch v.Hash {
	case "", "5tuple", "src-ip":
	default:
		return VIPKey{}, FieldErr(field+".hash", "%q: allowed are 5tuple, src-ip", v.Hash)
	}
	if v.Stateless && k.Proto != UDP {
		return VIPKey{}, FieldErr(field+".stateless", "only for udp VIPs (a TCP connection needs its flow kept)")
	}
	if v.PanicThreshold != nil && (*v.PanicThreshold < 0 || *v.PanicThreshold > 100) {
		return VIPKey{}, FieldErr(field+".panic_threshold", "%d: allowed are 0 (disabled) to 100 percent", *v.PanicThreshold)
	}
	if v.MinHealthy < 0 || v.MinHealthy > MaxMinHealthy {
		return VIPKey{}, FieldErr(field+".min_healthy", "%d: allowed are 1-%d (0: the default, 1)", v.MinHealthy, MaxMinHealthy)
	}
	if v.Check != nil {
		if err := v.Check.validate(field+".check", false); err != nil {
			return VIPKey{}, err
		}
		if k.Port == 0 && v.Check.Port == 0 {
			return VIPKey{}, FieldErr(field+".check.port", "missing: a port-wildcard VIP's check needs a port")
		}
	}
	seen := map[netip.Addr]int{}
	for i := range v.Backends {
		bf := fmt.Sprintf("%s.backends[%d]", field, i)
		a, err := v.Backends[i].ValidateAt(bf, v.Check != nil)
		if err != nil {
			return VIPKey{}, err
		}
		if a.Is4() != k.Addr.Is4() {
			return VIPKey{}, FieldErr(bf+".address", "%s: the backend's address family must match the VIP's (%s)", a, k.Addr)
		}
		if j, dup := seen[a]; dup {
			return VIPKey{}, FieldErr(bf+".address", "%s is already a backend of this VIP (backends[%d])", a, j)
		}
		seen[a] = i
	}
	return k, nil
}

// ValidateAt checks a backend at a field path; vipCheck says whether its
// VIP has a check that a partial check of the backend overrides.
func (b *BackendConfig) ValidateAt(field string, vipCheck bool) (netip.Addr, error) {
	a, err := ParseBackendAddr(b.Address)
	if err != nil {
		return netip.Addr{}, FieldErr(field+".address", "%v", err)
	}
	if b.Weight > MaxWeight {
		return netip.Addr{}, FieldErr(field+".weight", "%d: allowed are 1-%d", b.Weight, MaxWeight)
	}
	if b.Check != nil {
		if err := b.Check.validate(field+".check", vipCheck); err != nil {
			return netip.Addr{}, err
		}
	}
	return a, nil
}

// validate checks a check; partial is true for an override of a VIP's check,
// where kind may be left out.
func (c *CheckConfig) validate(field string, partial bool) error {
	switch c.Kind {
	case "tcp":
		if c.Path != "" || c.Host != "" {
			return FieldErr(field+".path", "path and host are for http and https checks only")
		}
	case "http", "https":
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			return FieldErr(field+".path", "%q: must start with /", c.Path)
		}
	case "":
		if !partial {
			return FieldErr(field+".kind", "missing: allowed are tcp, http, https")
		}
	default:
		return FieldErr(field+".kind", "%q: allowed are tcp, http, https", c.Kind)
	}
	if c.Rise < 0 || c.Rise > 100 {
		return FieldErr(field+".rise", "%d: allowed are 1-100", c.Rise)
	}
	if c.Fall < 0 || c.Fall > 100 {
		return FieldErr(field+".fall", "%d: allowed are 1-100", c.Fall)
	}
	if c.Interval != 0 && time.Duration(c.Interval) < 10*time.Millisecond {
		return FieldErr(field+".interval", "%s: allowed is at least 10ms", c.Interval)
	}
	if c.Timeout != 0 && c.Interval != 0 && c.Timeout > c.Interval {
		return FieldErr(field+".timeout", "%s: must not exceed the interval (%s)", c.Timeout, c.Interval)
	}
	if c.Kind != "" {
		s := check.Spec{Kind: check.Kind(c.Kind), Target: "192.0.2.1:1", Interval: time.Duration(c.Interval),
			Timeout: time.Duration(c.Timeout), Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host}
		if s.Timeout == 0 && s.Interval != 0 && s.Interval < check.DefaultTimeout {
			s.Timeout = s.Interval
		}
		if err := s.Validate(); err != nil {
			return FieldErr(field, "%v", err)
		}
	}
	return nil
}

// Merge returns the VIP's check with a backend's override applied.
func (c *CheckConfig) Merge(o *CheckConfig) *CheckConfig {
	if c == nil {
		return nil
	}
	m := *c
	if o == nil {
		return &m
	}
	if o.Kind != "" {
		m.Kind = o.Kind
	}
	if o.Port != 0 {
		m.Port = o.Port
	}
	if o.Interval != 0 {
		m.Interval = o.Interval
	}
	if o.Timeout != 0 {
		m.Timeout = o.Timeout
	}
	if o.Rise != 0 {
		m.Rise = o.Rise
	}
	if o.Fall != 0 {
		m.Fall = o.Fall
	}
	if o.Path != "" {
		m.Path = o.Path
	}
	if o.Host != "" {
		m.Host = o.Host
	}
	return &m
}

// checkTableSize is the one place that decides whether a table size is
// valid: the prime rule is maglev's (CheckSize), and of the valid sizes the
// datapath holds a fixed set (one outer map per size).
func checkTableSize(size uint32) error {
	if slices.Contains(loader.SupportedTableSizes, size) {
		return nil
	}
	what := "is not a prime"
	if _, err := maglev.CheckSize(size, 0); err == nil {
		what = "is a prime the datapath does not hold"
	}
	return fmt.Errorf("%d %s: allowed are %s", size, what, tableSizes())
}

func tableSizes() string {
	s := make([]string, len(loader.SupportedTableSizes))
	for i, n := range loader.SupportedTableSizes {
		s[i] = strconv.FormatUint(uint64(n), 10)
	}
	return strings.Join(s, ", ")
}

package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/loader"
	"gopkg.in/yaml.v3"
)

// Defaults of the daemon's configuration.
const (
	DefaultBPFFS          = "/sys/fs/bpf/xlb"
	DefaultStateDir       = "/var/lib/xlb"
	DefaultSocket         = "/run/xlb/xlb.sock"
	DefaultMetricsAddr    = "127.0.0.1:9437"
	DefaultTableSize      = 65537
	DefaultPanicThreshold = 50
	DefaultDrainTimeout   = 30 * time.Second
	DefaultDrainIdle      = 10 * time.Second
	MaxWeight             = 1000
)

// Config is the daemon's YAML configuration (testdata/xlb.yaml shows every
// key). Decoding is strict: unknown keys and bad values are errors with line
// numbers.
type Config struct {
	Interface   string      `yaml:"interface" json:"interface,omitempty"`       // required here or by --iface
	BPFFS       string      `yaml:"bpffs" json:"bpffs,omitempty"`               // default DefaultBPFFS
	StateDir    string      `yaml:"state_dir" json:"state_dir,omitempty"`       // default DefaultStateDir
	Socket      string      `yaml:"socket" json:"socket,omitempty"`             // default DefaultSocket
	SocketGroup string      `yaml:"socket_group" json:"socket_group,omitempty"` // default "": only root
	MetricsAddr *string     `yaml:"metrics_addr" json:"metrics_addr,omitempty"` // default DefaultMetricsAddr; "" disables
	MaxBackends uint32      `yaml:"max_backends" json:"max_backends,omitempty"` // backend IDs, one per (VIP, backend); default loader.MaxBackends; sizes the pins
	DrainIdle   Duration    `yaml:"drain_idle" json:"drain_idle,omitempty"`     // a draining backend without packets this long leaves; default DefaultDrainIdle
	Encap       EncapConfig `yaml:"encap" json:"encap"`
	VIPs        []VIPConfig `yaml:"vips" json:"vips"`
}

// EncapConfig is the outer source prefix of encapsulated packets.
type EncapConfig struct {
	SourceV4 string `yaml:"source_v4" json:"source_v4,omitempty"` // default 192.0.2.0/24
	SourceV6 string `yaml:"source_v6" json:"source_v6,omitempty"` // default 2001:db8:e::/64
}

// VIPConfig is one VIP in the configuration and in API requests.
type VIPConfig struct {
	Address        string          `yaml:"address" json:"address"`
	Mode           string          `yaml:"mode,omitempty" json:"mode,omitempty"`                       // ipip (default) | l2dsr
	TableSize      uint32          `yaml:"table_size,omitempty" json:"table_size,omitempty"`           // a prime; default 65537
	Hash           string          `yaml:"hash,omitempty" json:"hash,omitempty"`                       // 5tuple (default) | src-ip
	PanicThreshold *int            `yaml:"panic_threshold,omitempty" json:"panic_threshold,omitempty"` // percent; default 50; 0 disables
	DrainTimeout   Duration        `yaml:"drain_timeout,omitempty" json:"drain_timeout,omitempty"`     // default 30s
	Check          *CheckConfig    `yaml:"check,omitempty" json:"check,omitempty"`                     // none: backends count as healthy
	Backends       []BackendConfig `yaml:"backends,omitempty" json:"backends,omitempty"`
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

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes strictly and validates a configuration.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return &c, nil // an empty file is an empty configuration
		}
		return nil, strictErr(err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Line = lineOf(&root, fe.Field)
		}
		return nil, err
	}
	return &c, nil
}

// strictErr turns yaml.v3's multi-line type errors into one line.
func strictErr(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s", strings.Join(te.Errors, "; "))
	}
	return err
}

// lineOf finds the line of a field path such as vips[1].backends[0].weight
// in the YAML tree; 0 if not found.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		if n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				next = n.Content[i+1]
				line = n.Content[i].Line
			}
		}
		if next == nil {
			return line
		}
		n = next
		if hasIdx {
			i, err := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			if err != nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}

// Validate checks the whole configuration; the first error names its field.
func (c *Config) Validate() error {
	if c.Interface != "" && (len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/ \t")) {
		return fieldErr("interface", "%q is not an interface name", c.Interface)
	}
	if c.MetricsAddr != nil && *c.MetricsAddr != "" {
		if _, err := netip.ParseAddrPort(*c.MetricsAddr); err != nil {
			return fieldErr("metrics_addr", "%q is not ADDR:PORT (e.g. 127.0.0.1:9437) or \"\" to disable", *c.MetricsAddr)
		}
	}
	if c.Encap.SourceV4 != "" {
		if p, err := netip.ParsePrefix(c.Encap.SourceV4); err != nil || !p.Addr().Is4() {
			return fieldErr("encap.source_v4", "%q is not an IPv4 prefix", c.Encap.SourceV4)
		}
	}
	if c.Encap.SourceV6 != "" {
		if p, err := netip.ParsePrefix(c.Encap.SourceV6); err != nil || !p.Addr().Is6() {
			return fieldErr("encap.source_v6", "%q is not an IPv6 prefix", c.Encap.SourceV6)
		}
	}
	if c.MaxBackends != 0 && (c.MaxBackends < loader.MinMaxBackends || c.MaxBackends > loader.MaxMaxBackends) {
		return fieldErr("max_backends", "%d: allowed are %d-%d", c.MaxBackends, loader.MinMaxBackends, loader.MaxMaxBackends)
	}
	if d := time.Duration(c.DrainIdle); d != 0 && (d < time.Second || d > 24*time.Hour) {
		return fieldErr("drain_idle", "%s: allowed are 1s to 24h", d)
	}
	pairs := 0
	for i := range c.VIPs {
		pairs += len(c.VIPs[i].Backends)
	}
	if limit := c.maxBackends(); pairs > int(limit)-1 {
		return fieldErr("max_backends", "%d holds %d (VIP, backend) pairs, the configuration has %d: raise max_backends", limit, limit-1, pairs)
	}
	seen := map[VIPKey]int{}
	for i := range c.VIPs {
		field := fmt.Sprintf("vips[%d]", i)
		k, err := c.VIPs[i].validate(field)
		if err != nil {
			return err
		}
		if j, dup := seen[k]; dup {
			return fieldErr(field+".address", "%s is already defined by vips[%d]", k, j)
		}
		seen[k] = i
	}
	return nil
}

// maxBackends is MaxBackends or its default.
func (c *Config) maxBackends() uint32 {
	if c.MaxBackends == 0 {
		return loader.MaxBackends
	}
	return c.MaxBackends
}

// Validate checks a VIP as the API would, so that a client can refuse bad
// input before it contacts the daemon.
func (v *VIPConfig) Validate() error {
	_, err := v.validate("vip")
	return err
}

func (v *VIPConfig) validate(field string) (VIPKey, error) {
	k, err := ParseVIPKey(v.Address)
	if err != nil {
		return VIPKey{}, fieldErr(field+".address", "%v", err)
	}
	switch v.Mode {
	case "", "ipip", "l2dsr":
	default:
		return VIPKey{}, fieldErr(field+".mode", "%q: allowed are ipip, l2dsr", v.Mode)
	}
	if v.TableSize != 0 && !slices.Contains(loader.SupportedTableSizes, v.TableSize) {
		what := "is not a prime"
		if isPrime(v.TableSize) {
			what = "is a prime the datapath does not hold"
		}
		return VIPKey{}, fieldErr(field+".table_size", "%d %s: allowed are %s", v.TableSize, what, tableSizes())
	}
	switch v.Hash {
	case "", "5tuple", "src-ip":
	default:
		return VIPKey{}, fieldErr(field+".hash", "%q: allowed are 5tuple, src-ip", v.Hash)
	}
	if v.PanicThreshold != nil && (*v.PanicThreshold < 0 || *v.PanicThreshold > 100) {
		return VIPKey{}, fieldErr(field+".panic_threshold", "%d: allowed are 0 (disabled) to 100 percent", *v.PanicThreshold)
	}
	if v.Check != nil {
		if err := v.Check.validate(field+".check", false); err != nil {
			return VIPKey{}, err
		}
		if k.Port == 0 && v.Check.Port == 0 {
			return VIPKey{}, fieldErr(field+".check.port", "missing: a port-wildcard VIP's check needs a port")
		}
	}
	seen := map[netip.Addr]int{}
	for i := range v.Backends {
		bf := fmt.Sprintf("%s.backends[%d]", field, i)
		a, err := v.Backends[i].validate(bf, v.Check != nil)
		if err != nil {
			return VIPKey{}, err
		}
		if a.Is4() != k.Addr.Is4() {
			return VIPKey{}, fieldErr(bf+".address", "%s: the backend's address family must match the VIP's (%s)", a, k.Addr)
		}
		if j, dup := seen[a]; dup {
			return VIPKey{}, fieldErr(bf+".address", "%s is already a backend of this VIP (backends[%d])", a, j)
		}
		seen[a] = i
	}
	return k, nil
}

func (b *BackendConfig) validate(field string, vipCheck bool) (netip.Addr, error) {
	a, err := ParseBackendAddr(b.Address)
	if err != nil {
		return netip.Addr{}, fieldErr(field+".address", "%v", err)
	}
	if b.Weight > MaxWeight {
		return netip.Addr{}, fieldErr(field+".weight", "%d: allowed are 1-%d", b.Weight, MaxWeight)
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
			return fieldErr(field+".path", "path and host are for http and https checks only")
		}
	case "http", "https":
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			return fieldErr(field+".path", "%q: must start with /", c.Path)
		}
	case "":
		if !partial {
			return fieldErr(field+".kind", "missing: allowed are tcp, http, https")
		}
	default:
		return fieldErr(field+".kind", "%q: allowed are tcp, http, https", c.Kind)
	}
	if c.Rise < 0 || c.Rise > 100 {
		return fieldErr(field+".rise", "%d: allowed are 1-100", c.Rise)
	}
	if c.Fall < 0 || c.Fall > 100 {
		return fieldErr(field+".fall", "%d: allowed are 1-100", c.Fall)
	}
	if c.Interval != 0 && time.Duration(c.Interval) < 10*time.Millisecond {
		return fieldErr(field+".interval", "%s: allowed is at least 10ms", c.Interval)
	}
	if c.Timeout != 0 && c.Interval != 0 && c.Timeout > c.Interval {
		return fieldErr(field+".timeout", "%s: must not exceed the interval (%s)", c.Timeout, c.Interval)
	}
	if c.Kind != "" {
		s := check.Spec{Kind: check.Kind(c.Kind), Target: "192.0.2.1:1", Interval: time.Duration(c.Interval),
			Timeout: time.Duration(c.Timeout), Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host}
		if s.Timeout == 0 && s.Interval != 0 && s.Interval < check.DefaultTimeout {
			s.Timeout = s.Interval
		}
		if err := s.Validate(); err != nil {
			return fieldErr(field, "%v", err)
		}
	}
	return nil
}

// merge returns the VIP's check with a backend's override applied.
func (c *CheckConfig) merge(o *CheckConfig) *CheckConfig {
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

func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	for d := uint32(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func tableSizes() string {
	s := make([]string, len(loader.SupportedTableSizes))
	for i, n := range loader.SupportedTableSizes {
		s[i] = strconv.FormatUint(uint64(n), 10)
	}
	return strings.Join(s, ", ")
}

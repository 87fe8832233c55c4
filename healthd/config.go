package healthd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
	"gopkg.in/yaml.v3"
)

// Defaults of the daemon's configuration.
const (
	DefaultBPFFS       = "/sys/fs/bpf/xlb"
	DefaultStateDir    = "/var/lib/xlb"
	DefaultMetricsAddr = "127.0.0.1:9437"
	DefaultDrainIdle   = 10 * time.Second
)

// Config is the daemon's YAML configuration (testdata/xlb.yaml shows every
// key). Decoding is strict: unknown keys and bad values are errors with line
// numbers.
type Config struct {
	Interface   string          `yaml:"interface" json:"interface,omitempty"`       // required here or by --iface
	BPFFS       string          `yaml:"bpffs" json:"bpffs,omitempty"`               // default DefaultBPFFS
	StateDir    string          `yaml:"state_dir" json:"state_dir,omitempty"`       // default DefaultStateDir
	Socket      string          `yaml:"socket" json:"socket,omitempty"`             // default api.DefaultSocket
	SocketGroup string          `yaml:"socket_group" json:"socket_group,omitempty"` // default "": only root
	MetricsAddr *string         `yaml:"metrics_addr" json:"metrics_addr,omitempty"` // default DefaultMetricsAddr; "" disables
	MaxBackends uint32          `yaml:"max_backends" json:"max_backends,omitempty"` // backend IDs, one per (VIP, backend); default loader.MaxBackends; sizes the pins
	DrainIdle   api.Duration    `yaml:"drain_idle" json:"drain_idle,omitempty"`     // a draining backend without packets this long leaves; default DefaultDrainIdle
	Encap       EncapConfig     `yaml:"encap" json:"encap"`
	VIPs        []api.VIPConfig `yaml:"vips" json:"vips"`
}

// EncapConfig is how packets reach the backends: the outer source prefix of
// encapsulated packets and the MTU of the path, with the ICMP "too big"
// answers for packets that exceed it. Read at start.
type EncapConfig struct {
	SourceV4 string `yaml:"source_v4" json:"source_v4,omitempty"` // default 192.0.2.0/24
	SourceV6 string `yaml:"source_v6" json:"source_v6,omitempty"` // default 2001:db8:e::/64
	// MTU is the largest IP packet, outer header included, the path to the
	// backends carries; a VIP packet that exceeds it once encapsulated is
	// answered with ICMP "fragmentation needed" / "packet too big" naming
	// MTU-20 (IPv4) or MTU-40 (IPv6). Default 1500.
	MTU int `yaml:"mtu,omitempty" json:"mtu,omitempty"`
	// ICMPRate caps those answers per second and CPU (default 1000; -1
	// sends none: such packets are dropped), ICMPBurst how many a CPU
	// sends at once after a quiet time (default 50).
	ICMPRate  int `yaml:"icmp_rate,omitempty" json:"icmp_rate,omitempty"`
	ICMPBurst int `yaml:"icmp_burst,omitempty" json:"icmp_burst,omitempty"`
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
		var fe *api.FieldError
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
		return api.FieldErr("interface", "%q is not an interface name", c.Interface)
	}
	if c.MetricsAddr != nil && *c.MetricsAddr != "" {
		if _, err := netip.ParseAddrPort(*c.MetricsAddr); err != nil {
			return api.FieldErr("metrics_addr", "%q is not ADDR:PORT (e.g. 127.0.0.1:9437) or \"\" to disable", *c.MetricsAddr)
		}
	}
	if c.Encap.SourceV4 != "" {
		if p, err := netip.ParsePrefix(c.Encap.SourceV4); err != nil || !p.Addr().Is4() {
			return api.FieldErr("encap.source_v4", "%q is not an IPv4 prefix", c.Encap.SourceV4)
		}
	}
	if c.Encap.SourceV6 != "" {
		if p, err := netip.ParsePrefix(c.Encap.SourceV6); err != nil || !p.Addr().Is6() {
			return api.FieldErr("encap.source_v6", "%q is not an IPv6 prefix", c.Encap.SourceV6)
		}
	}
	if c.Encap.MTU != 0 && (c.Encap.MTU < 576 || c.Encap.MTU > 65535) {
		return api.FieldErr("encap.mtu", "%d: allowed are 576-65535 (1320 or more for IPv6 VIPs)", c.Encap.MTU)
	}
	if c.Encap.ICMPRate < -1 || c.Encap.ICMPRate > 1_000_000 {
		return api.FieldErr("encap.icmp_rate", "%d: allowed are 1-1000000 answers per second and CPU, or -1 for none", c.Encap.ICMPRate)
	}
	if c.Encap.ICMPBurst < 0 || c.Encap.ICMPBurst > 1_000_000 {
		return api.FieldErr("encap.icmp_burst", "%d: allowed are 1-1000000", c.Encap.ICMPBurst)
	}
	if c.MaxBackends != 0 && (c.MaxBackends < loader.MinMaxBackends || c.MaxBackends > loader.MaxMaxBackends) {
		return api.FieldErr("max_backends", "%d: allowed are %d-%d", c.MaxBackends, loader.MinMaxBackends, loader.MaxMaxBackends)
	}
	if d := time.Duration(c.DrainIdle); d != 0 && (d < time.Second || d > 24*time.Hour) {
		return api.FieldErr("drain_idle", "%s: allowed are 1s to 24h", d)
	}
	pairs := 0
	for i := range c.VIPs {
		pairs += len(c.VIPs[i].Backends)
	}
	if limit := c.maxBackends(); pairs > int(limit)-1 {
		return api.FieldErr("max_backends", "%d holds %d (VIP, backend) pairs, the configuration has %d: raise max_backends", limit, limit-1, pairs)
	}
	seen := map[api.VIPKey]int{}
	for i := range c.VIPs {
		field := fmt.Sprintf("vips[%d]", i)
		k, err := c.VIPs[i].ValidateAt(field)
		if err != nil {
			return err
		}
		if j, dup := seen[k]; dup {
			return api.FieldErr(field+".address", "%s is already defined by vips[%d]", k, j)
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

package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Proto is the transport protocol of a VIP.
type Proto string

// The protocols a VIP can balance.
const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// VIPKey identifies a VIP: address, port (0 for a port wildcard) and protocol.
// Its text form is ADDR:PORT/PROTO with IPv6 in brackets and "*" as the port
// wildcard: 203.0.113.10:80/tcp, [2001:db8:f::10]:443/tcp, 203.0.113.10:*/tcp.
type VIPKey struct {
	Addr  netip.Addr
	Port  uint16 // 0 is the port wildcard "*"
	Proto Proto
}

// ParseVIPKey parses the text form of a VIP.
func ParseVIPKey(s string) (VIPKey, error) {
	hostport, proto, ok := strings.Cut(s, "/")
	if !ok {
		return VIPKey{}, fmt.Errorf("%q is not ADDR:PORT/PROTO (e.g. 203.0.113.10:80/tcp, [2001:db8:f::10]:443/tcp, 203.0.113.10:*/tcp)", s)
	}
	var k VIPKey
	switch Proto(proto) {
	case TCP, UDP:
		k.Proto = Proto(proto)
	default:
		return VIPKey{}, fmt.Errorf("%q: protocol %q: allowed are tcp, udp", s, proto)
	}
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		return VIPKey{}, fmt.Errorf("%q has no port: write ADDR:PORT/PROTO, port 1-65535 or *", s)
	}
	host, port := hostport[:i], hostport[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return VIPKey{}, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
		}
		k.Addr = a
	} else {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is4() {
			return VIPKey{}, fmt.Errorf("%q: %q is not an IPv4 address (IPv6 goes in brackets)", s, host)
		}
		k.Addr = a
	}
	if port != "*" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return VIPKey{}, fmt.Errorf("%q: port %q: allowed are 1-65535 or *", s, port)
		}
		k.Port = uint16(p)
	}
	if !k.Addr.IsGlobalUnicast() && !k.Addr.IsPrivate() {
		return VIPKey{}, fmt.Errorf("%q: %s is not a unicast address", s, k.Addr)
	}
	return k, nil
}

func (k VIPKey) String() string {
	port := "*"
	if k.Port != 0 {
		port = strconv.Itoa(int(k.Port))
	}
	host := k.Addr.String()
	if k.Addr.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + port + "/" + string(k.Proto)
}

// Less orders VIPs for stable listings.
func (k VIPKey) Less(o VIPKey) bool {
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c < 0
	}
	if k.Port != o.Port {
		return k.Port < o.Port
	}
	return k.Proto < o.Proto
}

// MarshalText implements encoding.TextMarshaler (JSON map keys and values).
func (k VIPKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *VIPKey) UnmarshalText(b []byte) error {
	v, err := ParseVIPKey(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// ParseBackendAddr parses a backend address: a unicast IPv4 or IPv6 address
// without zone.
func ParseBackendAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	if !a.IsGlobalUnicast() && !a.IsPrivate() {
		return netip.Addr{}, fmt.Errorf("%q is not a unicast address", s)
	}
	return a, nil
}

// Duration is a time.Duration written as "2s", "500ms" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 2s or 500ms", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 2s or 500ms", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"2s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration such as 2s or 500ms", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

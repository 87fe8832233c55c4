package ratelimit

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/proxy/config"
)

// ErrConfig is wrapped by every error about a limit's configuration.
var ErrConfig = errors.New("invalid rate limit config")

// Config is one rate limit: the config of a rate_limit middleware.
type Config struct {
	// Name identifies the limit in metrics, logs and the RateLimit fields;
	// default "default".
	Name string `yaml:"name"`
	// Rate requests per Per are allowed per key; required, at least 1.
	Rate int64 `yaml:"rate"`
	// Per is the window Rate counts over; default 1s.
	Per Duration `yaml:"per"`
	// Burst requests may come at once after a quiet time; default Rate.
	Burst int64 `yaml:"burst"`
	// Key says what is limited; default the client address.
	Key KeyConfig `yaml:"key"`
	// Keys gives the listed API keys (the value of key.header, key.cookie
	// or key.query, exactly one of which must be set) their own limits;
	// other keys get Rate, Per and Burst above.
	Keys []ClassConfig `yaml:"keys"`
	// Unknown is what a key not in Keys gets: "limit" (default) or "deny"
	// (403).
	Unknown string `yaml:"unknown"`
	// Missing is what a request without key.header, key.cookie or
	// key.query gets: "limit" (default: the absent part is an empty value,
	// so such requests share a key, per client when key.client is set) or
	// "deny" (401).
	Missing string `yaml:"missing"`
	// Global shares the buckets with every route that lists a limit of the
	// same name with global set (one limit for the whole proxy); default
	// false: each route has its own.
	Global bool `yaml:"global"`
	// Shadow counts and logs what would be limited but lets it through;
	// default false.
	Shadow bool `yaml:"shadow"`
	// Headers says which responses carry RateLimit-Policy and RateLimit:
	// "all" (default), "limited" or "none". Retry-After is always sent
	// with 429.
	Headers string `yaml:"headers"`
	// MaxKeys bounds the keys held in this proxy's memory (at most 48
	// bytes each); default 1000000. When full, the key closest to expiry
	// among a sample is dropped.
	MaxKeys int `yaml:"max_keys"`
	// Redis shares the limit between proxies; default none (each proxy
	// limits on its own).
	Redis *RedisConfig `yaml:"redis"`
}

// KeyConfig lists the parts of a request that make its key; all that are
// set are combined.
type KeyConfig struct {
	// Client is the client's address (the socket's peer, or the one the
	// trusted proxies name); default true when nothing else is set.
	Client bool `yaml:"client"`
	// IPv4Prefix groups IPv4 clients by this prefix length; default 32.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// IPv6Prefix groups IPv6 clients by this prefix length; default 64
	// (one customer usually holds a whole /64).
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// Header, Cookie and Query name a request header, cookie and query
	// parameter whose (first) value is part of the key; default none.
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	Query  string `yaml:"query"`
}

// ClassConfig is one API key with its own limit.
type ClassConfig struct {
	// Name is used in the RateLimit fields and logs instead of the key;
	// default "key<index>".
	Name string `yaml:"name"`
	// Value is the API key; required, unique.
	Value string `yaml:"value"`
	// Rate, Per and Burst as for the limit; Per defaults to the limit's,
	// Burst to Rate.
	Rate  int64    `yaml:"rate"`
	Per   Duration `yaml:"per"`
	Burst int64    `yaml:"burst"`
}

// RedisConfig makes the limit shared by every proxy using the same server.
type RedisConfig struct {
	// Address is the server's host:port; required.
	Address string `yaml:"address"`
	// DB is the database number; default 0.
	DB int `yaml:"db"`
	// Prefix starts every key this limit writes; default "xlb:rl:<name>:".
	Prefix string `yaml:"prefix"`
	// Timeout bounds one round trip; default 50ms.
	Timeout Duration `yaml:"timeout"`
	// OnError is what happens while Redis fails or is slower than Timeout:
	// "fail_open" (admit, default), "fail_closed" (503) or "local" (this
	// proxy applies the limit on its own).
	OnError string `yaml:"on_error"`
	// Backoff is how long Redis is left alone after an error, OnError
	// applying at once meanwhile; default 1s.
	Backoff Duration `yaml:"backoff"`
	// Batch is how many requests one round trip reserves for this proxy
	// to admit without asking again; default Burst/10, at least 1. Fewer
	// are granted when fewer remain, so the shared total stays within
	// the limit; a proxy may leave up to Batch-1 reserved unused.
	Batch int64 `yaml:"batch"`
}

// Duration is the proxy config's duration ("1.5s"), so that a limit's
// durations read like every other in the proxy's YAML.
type Duration = config.Duration

// ParseConfig decodes a limit's YAML strictly (unknown fields are errors,
// with their line), fills in defaults and validates it.
func ParseConfig(n *yaml.Node) (*Config, error) {
	c := &Config{}
	if n != nil && n.Kind != 0 {
		if err := decodeStrict(n, c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	return c, nil
}

// oneOf checks that *v is one of allowed, and sets it to the first, the
// default, when empty.
func oneOf(field string, v *string, allowed ...string) error {
	if *v == "" {
		*v = allowed[0]
		return nil
	}
	if slices.Contains(allowed, *v) {
		return nil
	}
	return bad(field, *v, strings.Join(allowed[:len(allowed)-1], ", ")+" or "+allowed[len(allowed)-1])
}

func bad(field string, value any, allowed string) error {
	if s, ok := value.(string); ok {
		value = strconv.Quote(s)
	}
	return fmt.Errorf("%w: %s %v: %s", ErrConfig, field, value, allowed)
}

// maxRate keeps interval*burst and Lua's doubles exact.
const maxRate = 1_000_000_000

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = "default"
	}
	if !validName(c.Name) {
		return bad("name", c.Name, "letters, digits, '-', '_' and '.' only, at most 64")
	}
	if c.Per == 0 {
		c.Per = Duration(time.Second)
	}
	if err := checkRate("", c.Rate, c.Per, &c.Burst); err != nil {
		return err
	}
	k := &c.Key
	if k.Header == "" && k.Cookie == "" && k.Query == "" {
		k.Client = true
	}
	if k.IPv4Prefix == 0 {
		k.IPv4Prefix = 32
	}
	if k.IPv6Prefix == 0 {
		k.IPv6Prefix = 64
	}
	if k.IPv4Prefix < 1 || k.IPv4Prefix > 32 {
		return bad("key.ipv4_prefix", k.IPv4Prefix, "1 to 32")
	}
	if k.IPv6Prefix < 1 || k.IPv6Prefix > 128 {
		return bad("key.ipv6_prefix", k.IPv6Prefix, "1 to 128")
	}
	if k.Header != "" && !validToken(k.Header) {
		return bad("key.header", k.Header, "a header name (letters, digits, '-')")
	}
	if k.Cookie != "" && !validToken(k.Cookie) {
		return bad("key.cookie", k.Cookie, "a cookie name (no spaces, '=', ';' or quotes)")
	}
	if k.Query != "" && strings.ContainsAny(k.Query, "&=# ") {
		return bad("key.query", k.Query, "a query parameter name (no '&', '=', '#' or spaces)")
	}
	parts := 0
	for _, s := range []string{k.Header, k.Cookie, k.Query} {
		if s != "" {
			parts++
		}
	}
	if len(c.Keys) > 0 && parts != 1 {
		return bad("keys", fmt.Sprintf("%d entries", len(c.Keys)), "need exactly one of key.header, key.cookie and key.query to hold the API key")
	}
	seen := map[string]int{}
	names := map[string]int{}
	for i := range c.Keys {
		e := &c.Keys[i]
		f := fmt.Sprintf("keys[%d]", i)
		if e.Value == "" {
			return bad(f+".value", "", "is required")
		}
		if j, dup := seen[e.Value]; dup {
			return bad(f+".value", fmt.Sprintf("(same as keys[%d])", j), "each API key once")
		}
		seen[e.Value] = i
		if e.Name == "" {
			e.Name = "key" + strconv.Itoa(i)
		}
		if !validName(e.Name) {
			return bad(f+".name", e.Name, "letters, digits, '-', '_' and '.' only, at most 64")
		}
		if j, dup := names[e.Name]; dup {
			return bad(f+".name", e.Name, fmt.Sprintf("unique (keys[%d] has it)", j))
		}
		names[e.Name] = i
		if e.Per == 0 {
			e.Per = c.Per
		}
		if err := checkRate(f+".", e.Rate, e.Per, &e.Burst); err != nil {
			return err
		}
	}
	if err := oneOf("unknown", &c.Unknown, "limit", "deny"); err != nil {
		return err
	}
	if err := oneOf("missing", &c.Missing, "limit", "deny"); err != nil {
		return err
	}
	if err := oneOf("headers", &c.Headers, "all", "limited", "none"); err != nil {
		return err
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 1_000_000
	}
	if c.MaxKeys < minShards || c.MaxKeys > 100_000_000 {
		return bad("max_keys", c.MaxKeys, fmt.Sprintf("%d to 100000000", minShards))
	}
	if r := c.Redis; r != nil {
		if err := r.setDefaults(c); err != nil {
			return err
		}
	}
	return nil
}

func checkRate(f string, rate int64, per Duration, burst *int64) error {
	if rate < 1 {
		return bad(f+"rate", rate, "is required: requests per 'per', at least 1")
	}
	if per.D() < time.Millisecond || per.D() > 24*time.Hour {
		return bad(f+"per", per.D().String(), "1ms to 24h")
	}
	if float64(rate)/per.D().Seconds() > maxRate {
		return bad(f+"rate", rate, fmt.Sprintf("at most %d per second", maxRate))
	}
	if *burst == 0 {
		*burst = rate
	}
	if *burst < 1 || *burst > 1_000_000 {
		return bad(f+"burst", *burst, "1 to 1000000")
	}
	return nil
}

func (r *RedisConfig) setDefaults(c *Config) error {
	if r.Address == "" {
		return bad("redis.address", "", "is required: host:port of the Redis server")
	}
	if _, port, err := net.SplitHostPort(r.Address); err != nil || port == "" {
		return bad("redis.address", r.Address, "host:port")
	}
	if r.DB < 0 || r.DB > 15 {
		return bad("redis.db", r.DB, "0 to 15")
	}
	if r.Prefix == "" {
		r.Prefix = "xlb:rl:" + c.Name + ":"
	}
	if r.Timeout == 0 {
		r.Timeout = Duration(50 * time.Millisecond)
	}
	if r.Timeout.D() > 10*time.Second {
		return bad("redis.timeout", r.Timeout.D().String(), "at most 10s")
	}
	if r.Backoff == 0 {
		r.Backoff = Duration(time.Second)
	}
	if err := oneOf("redis.on_error", &r.OnError, "fail_open", "fail_closed", "local"); err != nil {
		return err
	}
	if r.Batch == 0 {
		r.Batch = max(1, c.Burst/10)
	}
	if r.Batch < 1 || r.Batch > c.Burst {
		return bad("redis.batch", r.Batch, fmt.Sprintf("1 to burst (%d)", c.Burst))
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// validToken: an RFC 9110 token (header and cookie names).
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return s != ""
}

// canonicalHeader is the form net/http stores header names in.
func canonicalHeader(s string) string { return http.CanonicalHeaderKey(s) }

// decodeStrict decodes n into out like yaml.Node.Decode, but first rejects
// mapping keys that match no field, naming the key and its line (Node.Decode
// has no KnownFields).
func decodeStrict(n *yaml.Node, out any) error {
	if err := checkFields(n, reflect.TypeOf(out)); err != nil {
		return err
	}
	return n.Decode(out)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func checkFields(n *yaml.Node, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // Decode reports the type mismatch
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				return fmt.Errorf("line %d: field %s not found in %s", k.Line, k.Value, t.Name())
			}
			if err := checkFields(v, f.Type); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				if err := checkFields(c, t.Elem()); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				if err := checkFields(n.Content[i], t.Elem()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

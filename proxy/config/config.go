// Package config is the proxy's configuration: the types of its strict YAML
// file, parsing with line-numbered errors, and validation that names the
// field, the value and what is allowed, and fills in defaults. Nothing here
// touches a running proxy.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/proxy/discovery"
	"github.com/xlb-project/xlb/proxy/outlier"
	"github.com/xlb-project/xlb/proxy/sticky"
)

// ErrConfig is wrapped by every error that Parse, Load and Config.validate
// return for a config the user has to fix.
var ErrConfig = errors.New("invalid proxy config")

// Config is the whole proxy configuration, one YAML document.
type Config struct {
	// Listeners accept client connections; at least one.
	Listeners []ListenerConfig `yaml:"listeners"`
	// Pools are named groups of backends; routes refer to them by name.
	Pools []PoolConfig `yaml:"pools"`
	// Routes are tried in file order; the first whose match holds serves the
	// request. A request no route matches gets 404.
	Routes []RouteConfig `yaml:"routes"`
	// TrustedProxies lists the addresses (CIDR prefixes or single IPs) of
	// front ends whose X-Forwarded-*/Forwarded headers are believed. Default
	// none: the client is the socket's peer and its forwarding headers are
	// replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClientAddressHeader is the header the trusted proxies write the
	// client's address in: x-forwarded-for (default) or forwarded (RFC
	// 7239). The client is its rightmost address that is not a trusted
	// proxy; the other header is the client's own and never read for it.
	ClientAddressHeader string `yaml:"client_address_header"`
	// RequestIDHeader is passed through when the client sends a valid one and
	// generated otherwise. Default X-Request-Id.
	RequestIDHeader string `yaml:"request_id_header"`
	// Timeouts towards backends.
	Timeouts TimeoutConfig `yaml:"timeouts"`
	// DrainTimeout is how long upgraded connections (WebSocket) to a drained
	// or removed backend, and all of them on shutdown, are given before they
	// are closed. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// ShutdownTimeout bounds a graceful shutdown. Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// Admin is the local control API.
	Admin AdminConfig `yaml:"admin"`
	// AccessLog configures the JSON access log.
	AccessLog AccessLogConfig `yaml:"access_log"`
	// PathNormalization says how request paths are normalised before
	// routing; the normalised path is the one forwarded.
	PathNormalization PathNormalizationConfig `yaml:"path_normalization"`
}

// PathNormalizationConfig: every request path is normalised before it is
// matched against the routes (RFC 3986: percent-encoded unreserved
// characters decoded, dot segments removed) and forwarded in that form, so
// that /x/../admin or /%61dmin cannot pass a rule on /admin.
type PathNormalizationConfig struct {
	// MergeSlashes turns runs of "/" into one (//admin is /admin).
	// Default true.
	MergeSlashes *bool `yaml:"merge_slashes"`
	// EncodedSlashes is what to do with %2F, %5C or a raw "" inside a
	// path segment, which backends may or may not treat as a separator:
	// "reject" (400, the default) or "keep" (forwarded as they are; route
	// matching sees them decoded).
	EncodedSlashes string `yaml:"encoded_slashes"`
}

// ListenerConfig is one address the proxy accepts clients on.
type ListenerConfig struct {
	// Name identifies the listener in logs; default the address.
	Name string `yaml:"name"`
	// Address is host:port, e.g. ":8080" or "127.0.0.1:8443"; required.
	Address string `yaml:"address"`
	// TLS, when set, terminates TLS; HTTP/2 is then offered through ALPN.
	TLS *TLSConfig `yaml:"tls"`
	// H2C accepts HTTP/2 with prior knowledge on a plain listener. Default
	// false. (The h2c Upgrade header is never honoured.)
	H2C bool `yaml:"h2c"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes a keep-alive client connection idle this long.
	// Default 60s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// WriteTimeout disconnects a client that accepts none of the bytes
	// the proxy has for it for this long (a client that stops reading a
	// response or a WebSocket). Default 60s.
	WriteTimeout Duration `yaml:"write_timeout"`
	// MaxHeaderBytes limits the request line plus headers. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// BodyLimits bound the request bodies read on this listener; a route
	// may set its own. body_read_timeout defaults to 60s here, the others
	// to no limit.
	BodyLimits `yaml:",inline"`
	// MaxConnectionsPerClient bounds the connections open at once from one
	// client address (IPv6: one /64); one more gets a 503 naming the limit
	// (plain HTTP; a TLS connection is closed) and is closed. Peers in
	// trusted_proxies are not counted. Default 0: no bound.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
}

// BodyLimits bound a request body as the proxy reads it from the client
// (and streams it to the backend). A client that breaks one gets 408 or
// 413 and its connection is closed; the backend is not blamed for it.
type BodyLimits struct {
	// BodyReadTimeout is the longest wait for the next bytes of a request
	// body (408 Request Timeout after it). Listener default 60s; from 100ms
	// to 1h.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// BodyMinRate is the slowest average a request body may arrive at, in
	// bytes per second, counted from the start of the body once
	// body_read_timeout has passed (408 below it). Default 0: no minimum.
	BodyMinRate int64 `yaml:"body_min_rate"`
	// MaxBodyBytes is the largest request body accepted (413 Content Too
	// Large above it, at once when Content-Length says so). Default 0: no
	// limit.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Merge returns b with the fields that o sets replaced by o's.
func (b BodyLimits) Merge(o BodyLimits) BodyLimits {
	if o.BodyReadTimeout != 0 {
		b.BodyReadTimeout = o.BodyReadTimeout
	}
	if o.BodyMinRate != 0 {
		b.BodyMinRate = o.BodyMinRate
	}
	if o.MaxBodyBytes != 0 {
		b.MaxBodyBytes = o.MaxBodyBytes
	}
	return b
}

// TLSConfig names the certificate files of a TLS listener. The files are
// re-read when they change (checked every ReloadInterval) and on reload.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"` // PEM chain; required
	KeyFile  string `yaml:"key_file"`  // PEM key; required
	// ReloadInterval is how often the files' modification times are checked.
	// Default 10s.
	ReloadInterval Duration `yaml:"reload_interval"`
}

// TimeoutConfig holds the timeouts towards backends.
type TimeoutConfig struct {
	Connect        Duration `yaml:"connect"`         // TCP connect; default 5s
	ResponseHeader Duration `yaml:"response_header"` // request sent to response headers; default 60s
	Idle           Duration `yaml:"idle"`            // idle backend keep-alive connection; default 90s
}

// AdminConfig is the admin API (drain, undrain, list, reload, metrics).
type AdminConfig struct {
	// Socket is the Unix socket path of the admin API; default none. Mode
	// 0660: whoever can open it can change the proxy.
	Socket string `yaml:"socket"`
	// MetricsAddress, when set, serves /metrics over TCP (host:port).
	MetricsAddress string `yaml:"metrics_address"`
}

// AccessLogConfig configures the access log.
type AccessLogConfig struct {
	// Path is "stdout", "stderr" or a file path (appended to); default none
	// (no access log).
	Path string `yaml:"path"`
}

// PoolConfig is a named group of backends.
type PoolConfig struct {
	Name string `yaml:"name"` // required, unique
	// Algorithm is one of balance.Algorithms; default round_robin.
	Algorithm string `yaml:"algorithm"`
	// LoadFactor bounds consistent_hash (see balance.Options); default 1.25.
	LoadFactor float64 `yaml:"load_factor"`
	// HashKey says what consistent_hash hashes: client_ip (default), path,
	// header:NAME, cookie:NAME or query:NAME.
	HashKey string `yaml:"hash_key"`
	// Backends are the static members; at least one.
	Backends []BackendConfig `yaml:"backends"`
	// HealthCheck, when set, probes every backend actively. A backend added
	// by a reload starts unknown (not usable) until its first check passes,
	// unless start_healthy is set.
	HealthCheck *HealthCheckConfig `yaml:"health_check"`
	// Outlier, when set, ejects backends whose requests fail repeatedly
	// (passive health; see proxy/outlier).
	Outlier *OutlierConfig `yaml:"outlier"`
	// Sticky, when set, keeps a client on its backend with a signed cookie.
	Sticky *StickyConfig `yaml:"sticky"`
	// Breaker, when set, gives every backend a circuit breaker;
	// PoolBreaker one for the pool as a whole.
	Breaker     *BreakerConfig `yaml:"breaker"`
	PoolBreaker *BreakerConfig `yaml:"pool_breaker"`
	// SlowStart, when set, ramps up backends that become usable.
	SlowStart *SlowStartConfig `yaml:"slow_start"`
	// Adaptive, when set, sheds load above an adaptive concurrency limit.
	Adaptive *AdaptiveConfig `yaml:"adaptive_concurrency"`
	// Discovery, when set, reads the backends from a file or DNS instead of
	// (or, until its first answer, in addition to nothing but) Backends;
	// Backends must then be empty.
	Discovery *DiscoveryConfig `yaml:"discovery"`
	// MaxInFlight bounds the requests forwarded to the pool's backends at
	// once; one more is answered 503 at once (Xlb-Limit names the pool).
	// Default 0: no bound.
	MaxInFlight int `yaml:"max_in_flight"`
}

// OutlierConfig is passive ejection; a failure is a request that got no
// response (connect error, reset, timeout) or a 5xx response.
type OutlierConfig struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"` // default 5
	BaseEjection        Duration `yaml:"base_ejection"`        // default 30s; the n-th ejection lasts n times this
	MaxEjection         Duration `yaml:"max_ejection"`         // default 5m
	MaxEjectedPercent   int      `yaml:"max_ejected_percent"`  // default 50
}

// StickyConfig is cookie affinity. The cookie names the backend, signed
// with HMAC-SHA256 under Keys[0]; every key verifies, so a key is rotated by
// putting the new one first and dropping the old one after TTL.
type StickyConfig struct {
	// Keys are secrets of at least 32 bytes; required.
	Keys     []string `yaml:"keys"`
	Name     string   `yaml:"name"`      // default xlb_sticky
	TTL      Duration `yaml:"ttl"`       // default 1h
	Path     string   `yaml:"path"`      // default /
	Secure   bool     `yaml:"secure"`    // default false
	HTTPOnly bool     `yaml:"http_only"` // default false
	SameSite string   `yaml:"same_site"` // lax, strict, none or empty (default)
}

// DiscoveryConfig reads a pool's backends from outside the config. Exactly
// one of File and DNS.
type DiscoveryConfig struct {
	// File lists "host:port [weight]" lines; re-read when it changes.
	File string `yaml:"file"`
	// DNS resolves a name: A, AAAA, A+AAAA (default; needs port) or SRV.
	DNS *DNSConfig `yaml:"dns"`
	// Interval between refreshes; default 5s.
	Interval Duration `yaml:"interval"`
}

// DNSConfig is a DNS discovery source.
type DNSConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	Port int    `yaml:"port"`
}

// BackendConfig is one backend of a pool.
type BackendConfig struct {
	Address string `yaml:"address"` // host:port; required
	Weight  int    `yaml:"weight"`  // default 1
}

// HealthCheckConfig is a pool's active check, applied to each backend.
type HealthCheckConfig struct {
	Kind         string   `yaml:"kind"`          // tcp, http or https; default http
	Port         int      `yaml:"port"`          // default the backend's port
	Path         string   `yaml:"path"`          // default /
	Host         string   `yaml:"host"`          // Host header; default the backend address
	Interval     Duration `yaml:"interval"`      // default 2s
	Timeout      Duration `yaml:"timeout"`       // default 1s
	Rise         int      `yaml:"rise"`          // default 2
	Fall         int      `yaml:"fall"`          // default 3
	StartHealthy bool     `yaml:"start_healthy"` // new backends start healthy; default false
}

// RouteConfig is one entry of the routing table.
type RouteConfig struct {
	Name  string      `yaml:"name"` // required, unique; used in metrics and logs
	Match MatchConfig `yaml:"match"`
	// Exactly one of Pool, Redirect and Respond says what the route does.
	Pool     string          `yaml:"pool"`
	Redirect *RedirectConfig `yaml:"redirect"`
	Respond  *RespondConfig  `yaml:"respond"`
	// Rewrite changes the path sent to the backend.
	Rewrite *RewriteConfig `yaml:"rewrite"`
	// RequestHeaders are applied to the request sent to the backend,
	// ResponseHeaders to the response sent to the client.
	RequestHeaders  HeaderOps `yaml:"request_headers"`
	ResponseHeaders HeaderOps `yaml:"response_headers"`
	// Timeout bounds the whole exchange with the backend; default none.
	Timeout Duration `yaml:"timeout"`
	// Retry, when set, sends a failed request again (see RetryConfig).
	Retry *RetryConfig `yaml:"retry"`
	// Fallback, when set, answers when the pool has no usable backend.
	Fallback *FallbackConfig `yaml:"fallback"`
	// BodyLimits override the listener's for this route's requests; unset
	// (0) fields keep the listener's.
	BodyLimits `yaml:",inline"`
	// Middleware is the route's chain of request handlers, outermost first
	// (see proxy/middleware). Each kind must be registered in the proxy's
	// Options.Middleware.
	Middleware []MiddlewareConfig `yaml:"middleware"`
	// MaxInFlight bounds the route's requests being served at once; one
	// more is answered 503 at once (Xlb-Limit names the route). Default 0:
	// no bound.
	MaxInFlight int `yaml:"max_in_flight"`
}

// MatchConfig holds a route's conditions; all that are set must hold.
type MatchConfig struct {
	// Hosts: any of them, exact ("api.example.com") or wildcard
	// ("*.example.com": one or more labels before .example.com). Compared
	// case-insensitively, without the port. Empty: any host.
	Hosts []string `yaml:"hosts"`
	// Path: at most one of exact, prefix and pattern.
	Path *PathMatch `yaml:"path"`
	// Methods: any of them. Empty: any method.
	Methods []string `yaml:"methods"`
	// Headers: each must hold.
	Headers []ValueMatch `yaml:"headers"`
	// Query: each must hold (on the first value of the parameter).
	Query []ValueMatch `yaml:"query"`
}

// PathMatch matches the request path.
type PathMatch struct {
	Exact string `yaml:"exact"`
	// Prefix matches on segment boundaries: "/api" matches /api and /api/x,
	// not /apix. A prefix ending in "/" matches anything under it.
	Prefix string `yaml:"prefix"`
	// Pattern is segments where "{name}" matches any one segment and a final
	// "{name...}" matches the rest, e.g. "/users/{id}/posts".
	Pattern string `yaml:"pattern"`
}

// ValueMatch is a header or query parameter condition: Present alone asks
// for the name to be there, Exact and Regex compare its value. With none of
// them set, the name must be present.
type ValueMatch struct {
	Name    string `yaml:"name"`
	Present bool   `yaml:"present"`
	Absent  bool   `yaml:"absent"`
	Exact   string `yaml:"exact"`
	Regex   string `yaml:"regex"`
}

// RewriteConfig changes the path forwarded to the backend. StripPrefix
// removes a prefix (it must match the route's path prefix), ReplacePrefix
// puts another in its place; Regex with Replacement rewrites the whole path
// (Go regexp syntax, $1 for groups). Regex is applied after the prefix.
type RewriteConfig struct {
	StripPrefix   string `yaml:"strip_prefix"`
	ReplacePrefix string `yaml:"replace_prefix"`
	Regex         string `yaml:"regex"`
	Replacement   string `yaml:"replacement"`
}

// HeaderOps add (append a value), set (replace) and remove headers, applied
// in that order: remove, set, add.
type HeaderOps struct {
	Add    map[string]string `yaml:"add"`
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// RedirectConfig answers with a redirect. Unset parts keep the request's.
type RedirectConfig struct {
	Scheme string `yaml:"scheme"` // http or https
	Host   string `yaml:"host"`
	Port   int    `yaml:"port"`
	Path   string `yaml:"path"`
	// StripQuery drops the query string.
	StripQuery bool `yaml:"strip_query"`
	// Code is 301, 302, 303, 307 or 308; default 302.
	Code int `yaml:"code"`
}

// RespondConfig answers with a fixed response.
type RespondConfig struct {
	Status      int    `yaml:"status"`       // default 200
	Body        string `yaml:"body"`         // default empty
	ContentType string `yaml:"content_type"` // default text/plain; charset=utf-8
}

// MiddlewareConfig is one handler of a route's chain: Kind selects the
// factory registered in the proxy's Options.Middleware, Config is passed to it as is.
type MiddlewareConfig struct {
	Kind   string    `yaml:"kind"`
	Config yaml.Node `yaml:"config"`
}

// Duration is a time.Duration written as a Go duration string ("1.5s").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: duration %q: want a non-negative Go duration such as 500ms, 10s or 1m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read proxy config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes one strict YAML document (unknown keys are errors, reported
// with their line) and validates it.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
		msg = strings.TrimPrefix(msg, "yaml: ")
		return nil, fmt.Errorf("%w: %s", ErrConfig, msg)
	}
	if err := c.validate(); err != nil {
		return nil, withLine(data, err)
	}
	return &c, nil
}

// Outlier is the outlier.Config of o, reporting to onEvent.
func (o *OutlierConfig) Outlier(onEvent func(outlier.Event)) outlier.Config {
	return outlier.Config{
		ConsecutiveFailures: o.ConsecutiveFailures,
		BaseEjection:        o.BaseEjection.D(),
		MaxEjection:         o.MaxEjection.D(),
		MaxEjectedPercent:   o.MaxEjectedPercent,
		OnEvent:             onEvent,
	}
}

// Codec is the cookie codec of the configured keys.
func (sc *StickyConfig) Codec() (*sticky.Codec, error) {
	keys := make([][]byte, len(sc.Keys))
	for i, k := range sc.Keys {
		keys[i] = []byte(k)
	}
	return sticky.NewCodec(keys, sc.Cookie().TTL)
}

// Cookie is the cookie settings with defaults filled in.
func (sc *StickyConfig) Cookie() sticky.Config {
	return sticky.Config{Name: sc.Name, TTL: sc.TTL.D(), Path: sc.Path, Secure: sc.Secure,
		HTTPOnly: sc.HTTPOnly, SameSite: sc.SameSite}.WithDefaults()
}

// Source is the discovery source of d.
func (d *DNSConfig) Source() *discovery.DNS {
	return &discovery.DNS{Name: d.Name, Type: d.Type, Port: uint16(d.Port)}
}

// Spec returns the check.Spec of one backend.
func (hc *HealthCheckConfig) Spec(addr string) check.Spec {
	target := addr
	if hc.Port != 0 {
		host, _, _ := net.SplitHostPort(addr)
		target = net.JoinHostPort(host, strconv.Itoa(hc.Port))
	}
	s := check.Spec{
		Kind:         check.Kind(hc.Kind),
		Target:       target,
		Interval:     hc.Interval.D(),
		Timeout:      hc.Timeout.D(),
		Rise:         hc.Rise,
		Fall:         hc.Fall,
		StartHealthy: hc.StartHealthy,
	}
	if hc.Kind != "tcp" {
		s.Path = hc.Path
		s.Host = hc.Host
	}
	return s.WithDefaults()
}

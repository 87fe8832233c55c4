package config

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/proxy/balance"
	"github.com/xlb-project/xlb/proxy/discovery"
	"github.com/xlb-project/xlb/proxy/internal/wire"
	"github.com/xlb-project/xlb/proxy/outlier"
)

// Validation of a decoded Config: every check names the field, the value
// and what is allowed, and fills in defaults.

func bad(field string, value any, allowed string) error {
	if s, ok := value.(string); ok {
		value = strconv.Quote(s)
	}
	return fmt.Errorf("%w: %s %v: %s", ErrConfig, field, value, allowed)
}

var validMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}

// validate checks every field and fills defaults; it touches nothing outside c.
func (c *Config) validate() error {
	if len(c.Listeners) == 0 {
		return bad("listeners", "[]", "at least one listener is required")
	}
	seenAddr, seenName := map[string]bool{}, map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		f := fmt.Sprintf("listeners[%d]", i)
		if _, port, err := net.SplitHostPort(l.Address); err != nil || port == "" {
			return bad(f+".address", l.Address, "must be host:port, e.g. :8080 or 127.0.0.1:8443")
		}
		if _, port, _ := net.SplitHostPort(l.Address); port != "0" && seenAddr[l.Address] {
			return bad(f+".address", l.Address, "is used by an earlier listener; addresses must be unique")
		}
		seenAddr[l.Address] = true
		if l.Name == "" {
			l.Name = l.Address
		}
		if seenName[l.Name] {
			return bad(f+".name", l.Name, "is used by an earlier listener; names must be unique")
		}
		seenName[l.Name] = true
		if l.TLS != nil {
			if l.TLS.CertFile == "" || l.TLS.KeyFile == "" {
				return bad(f+".tls", fmt.Sprintf("cert_file=%q key_file=%q", l.TLS.CertFile, l.TLS.KeyFile), "both cert_file and key_file are required")
			}
			if l.TLS.ReloadInterval == 0 {
				l.TLS.ReloadInterval = Duration(10 * time.Second)
			}
			if l.H2C {
				return bad(f+".h2c", true, "is only allowed on listeners without tls (TLS listeners offer h2 through ALPN)")
			}
		}
		if l.ReadHeaderTimeout == 0 {
			l.ReadHeaderTimeout = Duration(10 * time.Second)
		}
		if l.IdleTimeout == 0 {
			l.IdleTimeout = Duration(60 * time.Second)
		}
		if l.WriteTimeout == 0 {
			l.WriteTimeout = Duration(60 * time.Second)
		}
		if l.WriteTimeout < Duration(time.Second) || l.WriteTimeout > Duration(time.Hour) {
			return bad(f+".write_timeout", l.WriteTimeout.D(), "must be from 1s to 1h")
		}
		if l.MaxHeaderBytes == 0 {
			l.MaxHeaderBytes = 16 << 10
		}
		if l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 {
			return bad(f+".max_header_bytes", l.MaxHeaderBytes, "must be from 1024 to 1048576")
		}
		defDur(&l.BodyReadTimeout, 60*time.Second)
		if err := l.BodyLimits.validate(f); err != nil {
			return err
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			return bad(fmt.Sprintf("trusted_proxies[%d]", i), p, "must be an IP address or CIDR prefix, e.g. 10.0.0.0/8")
		}
	}
	if c.RequestIDHeader == "" {
		c.RequestIDHeader = "X-Request-Id"
	}
	if !wire.ValidHeaderName(c.RequestIDHeader) {
		return bad("request_id_header", c.RequestIDHeader, "must be a valid header name")
	}
	c.RequestIDHeader = http.CanonicalHeaderKey(c.RequestIDHeader)
	defDur(&c.Timeouts.Connect, 5*time.Second)
	defDur(&c.Timeouts.ResponseHeader, 60*time.Second)
	defDur(&c.Timeouts.Idle, 90*time.Second)
	defDur(&c.DrainTimeout, 30*time.Second)
	defDur(&c.ShutdownTimeout, 30*time.Second)
	pn := &c.PathNormalization
	if pn.MergeSlashes == nil {
		merge := true
		pn.MergeSlashes = &merge
	}
	switch pn.EncodedSlashes {
	case "":
		pn.EncodedSlashes = "reject"
	case "reject", "keep":
	default:
		return bad("path_normalization.encoded_slashes", pn.EncodedSlashes, "allowed: reject, keep")
	}
	if c.Admin.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.Admin.MetricsAddress); err != nil {
			return bad("admin.metrics_address", c.Admin.MetricsAddress, "must be host:port, e.g. 127.0.0.1:9180")
		}
	}

	pools := map[string]bool{}
	for i := range c.Pools {
		if err := c.Pools[i].validate(fmt.Sprintf("pools[%d]", i), pools); err != nil {
			return err
		}
	}
	routes := map[string]bool{}
	for i := range c.Routes {
		if err := c.Routes[i].validate(fmt.Sprintf("routes[%d]", i), routes, pools); err != nil {
			return err
		}
	}
	if len(c.Routes) == 0 {
		return bad("routes", "[]", "at least one route is required")
	}
	return nil
}

func defDur(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func (p *PoolConfig) validate(f string, seen map[string]bool) error {
	if p.Name == "" {
		return bad(f+".name", "", "a pool needs a name")
	}
	f = fmt.Sprintf("pools[%s]", p.Name)
	if seen[p.Name] {
		return bad(f+".name", p.Name, "is used by an earlier pool; names must be unique")
	}
	seen[p.Name] = true
	alg, err := balance.ParseAlgorithm(p.Algorithm)
	if err != nil {
		names := make([]string, len(balance.Algorithms))
		for i, a := range balance.Algorithms {
			names[i] = string(a)
		}
		return bad(f+".algorithm", p.Algorithm, "allowed: "+strings.Join(names, ", "))
	}
	p.Algorithm = string(alg)
	if p.LoadFactor != 0 && p.LoadFactor < 1 {
		return bad(f+".load_factor", p.LoadFactor, "must be at least 1")
	}
	if p.HashKey != "" {
		if _, err := balance.ParseKeySource(p.HashKey); err != nil {
			return bad(f+".hash_key", p.HashKey, "allowed: client_ip, path, header:NAME, cookie:NAME, query:NAME")
		}
		if alg != balance.ConsistentHash {
			return bad(f+".hash_key", p.HashKey, "is only used by algorithm consistent_hash")
		}
	}
	if d := p.Discovery; d != nil {
		if len(p.Backends) > 0 {
			return bad(f+".backends", fmt.Sprintf("%d backends", len(p.Backends)), "must be empty when discovery is set")
		}
		if (d.File == "") == (d.DNS == nil) {
			return bad(f+".discovery", "", "exactly one of file and dns is required")
		}
		if d.DNS != nil {
			if d.DNS.Port < 0 || d.DNS.Port > 65535 {
				return bad(f+".discovery.dns.port", d.DNS.Port, "must be from 1 to 65535")
			}
			if err := d.DNS.Source().Validate(); err != nil {
				return fmt.Errorf("%w: %s.discovery: %w", ErrConfig, f, err)
			}
		}
		defDur(&d.Interval, discovery.DefaultInterval)
	} else if len(p.Backends) == 0 {
		return bad(f+".backends", "[]", "a pool needs at least one backend (or discovery)")
	}
	if o := p.Outlier; o != nil {
		if _, err := outlier.New(o.Outlier(nil), nil); err != nil {
			return fmt.Errorf("%w: %s.outlier: %w", ErrConfig, f, err)
		}
	}
	if sc := p.Sticky; sc != nil {
		if _, err := sc.Codec(); err != nil {
			return fmt.Errorf("%w: %s.sticky: %w", ErrConfig, f, err)
		}
		if err := sc.Cookie().Validate(); err != nil {
			return fmt.Errorf("%w: %s.sticky: %w", ErrConfig, f, err)
		}
	}
	if err := p.validateResilience(f); err != nil {
		return err
	}
	addrs := map[string]bool{}
	for i := range p.Backends {
		b := &p.Backends[i]
		bf := fmt.Sprintf("%s.backends[%d]", f, i)
		host, port, err := net.SplitHostPort(b.Address)
		if err != nil || host == "" || port == "" {
			return bad(bf+".address", b.Address, "must be host:port, e.g. 198.51.100.10:8080")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad(bf+".address", b.Address, "port must be a number from 1 to 65535")
		}
		if addrs[b.Address] {
			return bad(bf+".address", b.Address, "appears twice in the pool")
		}
		addrs[b.Address] = true
		if b.Weight == 0 {
			b.Weight = 1
		}
		if b.Weight < 1 || b.Weight > balance.MaxWeight {
			return bad(bf+".weight", b.Weight, fmt.Sprintf("must be from 1 to %d", balance.MaxWeight))
		}
	}
	if hc := p.HealthCheck; hc != nil {
		if hc.Kind == "" {
			hc.Kind = "http"
		}
		if hc.Kind != "tcp" && hc.Kind != "http" && hc.Kind != "https" {
			return bad(f+".health_check.kind", hc.Kind, "allowed: tcp, http, https")
		}
		if hc.Port < 0 || hc.Port > 65535 {
			return bad(f+".health_check.port", hc.Port, "must be from 1 to 65535 (0: the backend's port)")
		}
		spec := hc.Spec("192.0.2.1:80")
		if len(p.Backends) > 0 {
			spec = hc.Spec(p.Backends[0].Address)
		}
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("%w: %s.health_check: %w", ErrConfig, f, err)
		}
	}
	return nil
}

func (r *RouteConfig) validate(f string, seen, pools map[string]bool) error {
	if r.Name == "" {
		return bad(f+".name", "", "a route needs a name")
	}
	f = fmt.Sprintf("routes[%s]", r.Name)
	if seen[r.Name] {
		return bad(f+".name", r.Name, "is used by an earlier route; names must be unique")
	}
	seen[r.Name] = true
	actions := 0
	if r.Pool != "" {
		actions++
		if !pools[r.Pool] {
			return bad(f+".pool", r.Pool, "names no pool defined under pools")
		}
	}
	if r.Redirect != nil {
		actions++
		switch r.Redirect.Code {
		case 0:
			r.Redirect.Code = http.StatusFound
		case 301, 302, 303, 307, 308:
		default:
			return bad(f+".redirect.code", r.Redirect.Code, "allowed: 301, 302, 303, 307, 308")
		}
		if s := r.Redirect.Scheme; s != "" && s != "http" && s != "https" {
			return bad(f+".redirect.scheme", s, "allowed: http, https")
		}
		if r.Redirect.Port < 0 || r.Redirect.Port > 65535 {
			return bad(f+".redirect.port", r.Redirect.Port, "must be from 1 to 65535")
		}
		if p := r.Redirect.Path; p != "" && !strings.HasPrefix(p, "/") {
			return bad(f+".redirect.path", p, "must start with /")
		}
		if strings.ContainsAny(r.Redirect.Host, "/ \r\n") {
			return bad(f+".redirect.host", r.Redirect.Host, "must be a host name")
		}
	}
	if r.Respond != nil {
		actions++
		if r.Respond.Status == 0 {
			r.Respond.Status = http.StatusOK
		}
		if r.Respond.Status < 200 || r.Respond.Status > 599 {
			return bad(f+".respond.status", r.Respond.Status, "must be from 200 to 599")
		}
		if r.Respond.ContentType == "" {
			r.Respond.ContentType = "text/plain; charset=utf-8"
		}
	}
	if actions != 1 {
		return bad(f, fmt.Sprintf("%d actions", actions), "exactly one of pool, redirect and respond is required")
	}
	if r.Pool == "" && (r.Rewrite != nil || len(r.RequestHeaders.Add)+len(r.RequestHeaders.Set)+len(r.RequestHeaders.Remove) > 0) {
		return bad(f+".rewrite/request_headers", "set", "only apply to routes with a pool")
	}
	if err := r.validateResilience(f, pools); err != nil {
		return err
	}
	if err := r.Match.validate(f + ".match"); err != nil {
		return err
	}
	if rw := r.Rewrite; rw != nil {
		if rw.StripPrefix == "" && rw.ReplacePrefix != "" {
			return bad(f+".rewrite.replace_prefix", rw.ReplacePrefix, "needs strip_prefix")
		}
		if rw.StripPrefix != "" {
			if !strings.HasPrefix(rw.StripPrefix, "/") {
				return bad(f+".rewrite.strip_prefix", rw.StripPrefix, "must start with /")
			}
			if mp := r.Match.Path; mp == nil || !strings.HasPrefix(mp.Prefix+mp.Exact, rw.StripPrefix) {
				return bad(f+".rewrite.strip_prefix", rw.StripPrefix, "must be a prefix of the route's match.path.prefix or exact")
			}
		}
		if rw.Regex == "" && rw.Replacement != "" {
			return bad(f+".rewrite.replacement", rw.Replacement, "needs regex")
		}
		if rw.Regex != "" {
			if _, err := regexp.Compile(rw.Regex); err != nil {
				return bad(f+".rewrite.regex", rw.Regex, "must be a Go regular expression: "+err.Error())
			}
		}
	}
	if err := r.BodyLimits.validate(f); err != nil {
		return err
	}
	if err := r.RequestHeaders.validate(f + ".request_headers"); err != nil {
		return err
	}
	if err := r.ResponseHeaders.validate(f + ".response_headers"); err != nil {
		return err
	}
	for i, m := range r.Middleware {
		if m.Kind == "" {
			return bad(fmt.Sprintf("%s.middleware[%d].kind", f, i), "", "is required")
		}
	}
	return nil
}

func (m *MatchConfig) validate(f string) error {
	for i, h := range m.Hosts {
		name := strings.TrimPrefix(h, "*.")
		if name == "" || strings.ContainsAny(name, "*/: \r\n") {
			return bad(fmt.Sprintf("%s.hosts[%d]", f, i), h, "must be a host name or *.domain")
		}
		m.Hosts[i] = strings.ToLower(h)
	}
	if p := m.Path; p != nil {
		n := 0
		for _, s := range []string{p.Exact, p.Prefix, p.Pattern} {
			if s != "" {
				n++
				if !strings.HasPrefix(s, "/") {
					return bad(f+".path", s, "must start with /")
				}
			}
		}
		if n != 1 {
			return bad(f+".path", fmt.Sprintf("%d forms", n), "exactly one of exact, prefix and pattern is required")
		}
		if p.Pattern != "" {
			if _, err := ParsePattern(p.Pattern); err != nil {
				return bad(f+".path.pattern", p.Pattern, err.Error())
			}
		}
	}
	for i, meth := range m.Methods {
		u := strings.ToUpper(meth)
		if !slices.Contains(validMethods, u) {
			return bad(fmt.Sprintf("%s.methods[%d]", f, i), meth, "allowed: "+strings.Join(validMethods, ", "))
		}
		m.Methods[i] = u
	}
	for i := range m.Headers {
		if err := m.Headers[i].validate(fmt.Sprintf("%s.headers[%d]", f, i), true); err != nil {
			return err
		}
	}
	for i := range m.Query {
		if err := m.Query[i].validate(fmt.Sprintf("%s.query[%d]", f, i), false); err != nil {
			return err
		}
	}
	return nil
}

func (v *ValueMatch) validate(f string, header bool) error {
	if v.Name == "" || (header && !wire.ValidHeaderName(v.Name)) {
		return bad(f+".name", v.Name, "must be a valid name")
	}
	n := 0
	for _, set := range []bool{v.Present, v.Absent, v.Exact != "", v.Regex != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return bad(f, v.Name, "at most one of present, absent, exact and regex")
	}
	if v.Regex != "" {
		if _, err := regexp.Compile(v.Regex); err != nil {
			return bad(f+".regex", v.Regex, "must be a Go regular expression: "+err.Error())
		}
	}
	return nil
}

func (h *HeaderOps) validate(f string) error {
	check := func(field, name, value string) error {
		if !wire.ValidHeaderName(name) {
			return bad(f+"."+field, name, "must be a valid header name")
		}
		if slices.Contains(wire.HopHeaders, http.CanonicalHeaderKey(name)) || http.CanonicalHeaderKey(name) == "Content-Length" {
			return bad(f+"."+field, name, "hop-by-hop and framing headers cannot be changed")
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return bad(f+"."+field+"["+name+"]", value, "must not contain line breaks or NUL")
		}
		return nil
	}
	for k, v := range h.Add {
		if err := check("add", k, v); err != nil {
			return err
		}
	}
	for k, v := range h.Set {
		if err := check("set", k, v); err != nil {
			return err
		}
	}
	for _, k := range h.Remove {
		if err := check("remove", k, ""); err != nil {
			return err
		}
	}
	return nil
}

// ParsePrefix parses a CIDR prefix or a single address (a full-length
// prefix), as trusted_proxies lists them.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// PatternSegment is one segment of a path pattern (PathMatch.Pattern).
type PatternSegment struct {
	Literal string
	Wild    bool // {name}: any one segment
	Rest    bool // {name...}: the rest, possibly empty
}

var errPattern = errors.New("segments are literals, {name}, or a final {name...}")

// ParsePattern splits a path pattern into its segments.
func ParsePattern(p string) ([]PatternSegment, error) {
	var segs []PatternSegment
	rest := strings.TrimPrefix(p, "/")
	for {
		seg, tail, more := strings.Cut(rest, "/")
		if strings.HasPrefix(seg, "{") || strings.HasSuffix(seg, "}") {
			if !strings.HasPrefix(seg, "{") || !strings.HasSuffix(seg, "}") || len(seg) < 3 {
				return nil, errPattern
			}
			name := seg[1 : len(seg)-1]
			if n, ok := strings.CutSuffix(name, "..."); ok {
				if more || n == "" {
					return nil, errPattern
				}
				segs = append(segs, PatternSegment{Rest: true})
				return segs, nil
			}
			segs = append(segs, PatternSegment{Wild: true})
		} else {
			if strings.ContainsAny(seg, "{}") {
				return nil, errPattern
			}
			segs = append(segs, PatternSegment{Literal: seg})
		}
		if !more {
			return segs, nil
		}
		rest = tail
	}
}

// validate checks the limits of a listener or route named f; 0 means unset.
func (b *BodyLimits) validate(f string) error {
	if t := b.BodyReadTimeout; t != 0 && (t < Duration(100*time.Millisecond) || t > Duration(time.Hour)) {
		return bad(f+".body_read_timeout", t.D(), "must be from 100ms to 1h")
	}
	if b.BodyMinRate < 0 {
		return bad(f+".body_min_rate", b.BodyMinRate, "must be a number of bytes per second, 0 or more")
	}
	if b.MaxBodyBytes < 0 {
		return bad(f+".max_body_bytes", b.MaxBodyBytes, "must be a number of bytes, 0 (no limit) or more")
	}
	return nil
}

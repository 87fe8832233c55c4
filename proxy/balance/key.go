package balance

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
)

// keyKind says where a KeySource reads the request's hash key.
type keyKind uint8

const (
	keyClientIP keyKind = iota
	keyHeader
	keyCookie
	keyPath
	keyQuery
)

// KeySource says which part of a request consistent_hash hashes. Its zero
// value is client_ip. Parse it from the config with ParseKeySource.
type KeySource struct {
	kind keyKind
	name string // header (canonical form), cookie or query parameter name
}

// ParseKeySource reads a config value: client_ip, header:NAME, cookie:NAME,
// query:NAME or path. The empty string means client_ip.
func ParseKeySource(s string) (KeySource, error) {
	kind, name, hasName := strings.Cut(s, ":")
	switch {
	case s == "" || s == "client_ip":
		return KeySource{kind: keyClientIP}, nil
	case s == "path":
		return KeySource{kind: keyPath}, nil
	case hasName && name != "" && kind == "header":
		if !validToken(name) {
			return KeySource{}, fmt.Errorf("hash key %q: header name %q is not a valid HTTP token", s, name)
		}
		return KeySource{kind: keyHeader, name: textproto.CanonicalMIMEHeaderKey(name)}, nil
	case hasName && name != "" && kind == "cookie":
		if !validToken(name) {
			return KeySource{}, fmt.Errorf("hash key %q: cookie name %q is not a valid HTTP token", s, name)
		}
		return KeySource{kind: keyCookie, name: name}, nil
	case hasName && name != "" && kind == "query":
		return KeySource{kind: keyQuery, name: name}, nil
	}
	return KeySource{}, fmt.Errorf("hash key %q: allowed client_ip, path, header:NAME, cookie:NAME, query:NAME", s)
}

// String returns the config form of the key source.
func (k KeySource) String() string {
	switch k.kind {
	case keyHeader:
		return "header:" + k.name
	case keyCookie:
		return "cookie:" + k.name
	case keyQuery:
		return "query:" + k.name
	case keyPath:
		return "path"
	}
	return "client_ip"
}

// Key returns the request's hash key. A request that lacks the header, cookie
// or query parameter (or whose value is empty) is keyed by its client address
// instead, so it still lands on a stable backend. The hash is FNV-1a followed
// by a 64-bit finaliser, the same on every proxy and across restarts.
// Key does not allocate.
func (k KeySource) Key(r *http.Request, clientIP netip.Addr) uint64 {
	var v string
	switch k.kind {
	case keyHeader:
		if vs := r.Header[k.name]; len(vs) > 0 {
			v = vs[0]
		}
	case keyCookie:
		v = cookieValue(r.Header["Cookie"], k.name)
	case keyQuery:
		v = queryValue(r.URL.RawQuery, k.name)
	case keyPath:
		v = r.URL.Path
		if v == "" {
			v = "/"
		}
	}
	if v != "" {
		return mix(fnvString(v))
	}
	a := clientIP.As16()
	h := uint64(fnvOffset)
	for _, c := range a {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return mix(h)
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// mix is the splitmix64 finaliser: FNV's low bits are weak, and the table
// index is taken modulo the table size.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// cookieValue finds name in Cookie header lines ("a=1; b=2") without
// allocating; the first match wins.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, found := strings.Cut(part, "=")
			if !found || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}

// queryValue finds name in a raw query ("a=1&b=2"), compared and returned
// still escaped; the first match wins.
func queryValue(raw, name string) string {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(part, "=")
		if k == name {
			return v
		}
	}
	return ""
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/maphash"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// keySpec says which parts of a request make its rate-limit key. All parts
// that are set are combined; the client address is used when nothing else
// is set.
type keySpec struct {
	client     bool
	v4Bits     int // prefix length IPv4 client addresses are grouped by
	v6Bits     int // same for IPv6
	header     string
	cookie     string
	query      string
	byClassKey bool // header, cookie or query selects a class in the keys table
}

// key is one request's key parts, on the stack; strings point into the
// request.
type key struct {
	addr    [16]byte
	hasAddr bool
	// vals are the header, cookie and query values, present says which of
	// the configured ones the request has.
	vals    [3]string
	present [3]bool
}

// extract reads the key parts of r for a client at addr.
func (s *keySpec) extract(r *http.Request, addr netip.Addr, k *key) {
	if s.client && addr.IsValid() {
		addr = addr.Unmap()
		bits := s.v6Bits
		if addr.Is4() {
			bits = s.v4Bits
		}
		if p, err := addr.Prefix(bits); err == nil {
			addr = p.Addr()
		}
		k.addr = addr.As16()
		k.hasAddr = true
	}
	if s.header != "" {
		if v := r.Header[s.header]; len(v) > 0 {
			k.vals[0], k.present[0] = v[0], true
		}
	}
	if s.cookie != "" {
		k.vals[1], k.present[1] = cookieValue(r.Header["Cookie"], s.cookie)
	}
	if s.query != "" {
		k.vals[2], k.present[2] = queryValue(r.URL.RawQuery, s.query)
	}
}

// missing reports that a configured header, cookie or query part is absent.
func (s *keySpec) missing(k *key) bool {
	return (s.header != "" && !k.present[0]) || (s.cookie != "" && !k.present[1]) || (s.query != "" && !k.present[2])
}

// classKey is the value that selects a class in the keys table.
func (s *keySpec) classKey(k *key) string {
	switch {
	case s.header != "":
		return k.vals[0]
	case s.cookie != "":
		return k.vals[1]
	default:
		return k.vals[2]
	}
}

// sum64 hashes the parts with this process's seed, for the local tables.
// Each part is length-prefixed so that parts cannot run into each other.
func (k *key) sum64(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	if k.hasAddr {
		_ = h.WriteByte(1)
		_, _ = h.Write(k.addr[:])
	}
	for i := range k.vals {
		if k.present[i] {
			writePart(&h, byte(2+i), k.vals[i])
		}
	}
	return h.Sum64()
}

func writePart(h *maphash.Hash, tag byte, v string) {
	var n [9]byte
	n[0] = tag
	l := uint64(len(v))
	for i := 1; i < 9; i++ {
		n[i] = byte(l)
		l >>= 8
	}
	_, _ = h.Write(n[:])
	_, _ = h.WriteString(v)
}

// shared is the key's name in Redis: the same on every proxy, and a hash,
// so API keys are not stored in Redis and a long header makes a short key.
func (k *key) shared(prefix string) string {
	h := sha256.New()
	if k.hasAddr {
		h.Write([]byte{1})
		h.Write(k.addr[:])
	}
	for i := range k.vals {
		if k.present[i] {
			var n [9]byte
			n[0] = byte(2 + i)
			l := uint64(len(k.vals[i]))
			for j := 1; j < 9; j++ {
				n[j] = byte(l)
				l >>= 8
			}
			h.Write(n[:])
			h.Write([]byte(k.vals[i]))
		}
	}
	var sum [32]byte
	return prefix + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// cookieValue finds cookie name in the Cookie header lines without parsing
// the others (net/http's parser allocates for every cookie).
func cookieValue(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			if i := strings.IndexByte(line, ';'); i >= 0 {
				part, line = line[:i], line[i+1:]
			} else {
				part, line = line, ""
			}
			part = strings.TrimSpace(part)
			n, v, ok := strings.Cut(part, "=")
			if !ok || n != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// queryValue finds the first value of parameter name in a raw query. A
// value with escapes is unescaped (that allocates); one that cannot be is
// taken as it is.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		if i := strings.IndexByte(raw, '&'); i >= 0 {
			part, raw = raw[:i], raw[i+1:]
		} else {
			part, raw = raw, ""
		}
		n, v, _ := strings.Cut(part, "=")
		if strings.ContainsAny(n, "%+") {
			if u, err := url.QueryUnescape(n); err == nil {
				n = u
			}
		}
		if n != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if u, err := url.QueryUnescape(v); err == nil {
				v = u
			}
		}
		return v, true
	}
	return "", false
}

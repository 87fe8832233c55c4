// Package clientaddr finds a request's client address from the socket's
// peer and, behind trusted proxies, their forwarding header, never from
// what a client can write itself.
package clientaddr

import (
	"net/netip"
	"strings"
)

// Source finds the client's address: the socket's peer, or, when the
// peer is one of the Trusted proxies, the rightmost address in the
// forwarding header that is not a trusted proxy (everything left of it was
// written by the client and proves nothing).
type Source struct {
	Trusted []netip.Prefix
	// Forwarded reads the RFC 7239 Forwarded header instead of
	// X-Forwarded-For. Only the header the trusted proxies write may be
	// read: a client can send the other one with any address in it.
	Forwarded bool
}

func (c *Source) trusted(a netip.Addr) bool {
	for _, p := range c.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the client address of a request from peer with header
// lines xff (X-Forwarded-For) and fwd (Forwarded).
func (c *Source) Addr(peer netip.Addr, xff, fwd []string) netip.Addr {
	peer = peer.Unmap()
	if len(c.Trusted) == 0 || !c.trusted(peer) {
		return peer
	}
	lines, parse := xff, parseXFFHop
	if c.Forwarded {
		lines, parse = fwd, parseForwardedHop
	}
	client := peer
	for i := len(lines) - 1; i >= 0; i-- {
		list := lines[i]
		for list != "" {
			var hop string
			hop, list = lastHop(list)
			a, ok := parse(hop)
			if !ok {
				// Garbage or an obfuscated hop: the last trusted hop is the
				// nearest address anyone vouches for.
				return client
			}
			client = a
			if !c.trusted(a) {
				return a
			}
		}
	}
	return client
}

// lastHop splits the last comma-separated element off list, minding quoted
// strings (a Forwarded value may quote a comma).
func lastHop(list string) (hop, rest string) {
	quoted := false
	for i := len(list) - 1; i >= 0; i-- {
		switch list[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return list[i+1:], list[:i]
			}
		}
	}
	return list, ""
}

func parseXFFHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	// Some proxies write host:port or [v6]:port.
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// parseForwardedHop reads the for= parameter of one Forwarded element:
// for=192.0.2.60, for="[2001:db8::1]:4711", for="192.0.2.60:80".
func parseForwardedHop(elem string) (netip.Addr, bool) {
	for elem != "" {
		var pair string
		if i := strings.IndexByte(elem, ';'); i >= 0 {
			pair, elem = elem[:i], elem[i+1:]
		} else {
			pair, elem = elem, ""
		}
		n, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(n, "for") {
			continue
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if strings.HasPrefix(v, "[") {
			if ap, err := netip.ParseAddrPort(v); err == nil {
				return ap.Addr().Unmap(), true
			}
			if end := strings.IndexByte(v, ']'); end > 0 {
				if a, err := netip.ParseAddr(v[1:end]); err == nil {
					return a.Unmap(), true
				}
			}
			return netip.Addr{}, false
		}
		return parseXFFHop(v)
	}
	return netip.Addr{}, false
}

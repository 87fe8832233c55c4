// Package concurrency holds the proxy's concurrency limits, which refuse at
// once instead of queueing without bound: open connections per client
// address, and requests in flight (per route, per pool).
package concurrency

import (
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
)

// LimitHeader names, on a refusal, the limit that refused.
const LimitHeader = "Xlb-Limit"

// Gate admits at most Max holders at a time.
type Gate struct {
	max int64
	n   atomic.Int64
}

// NewGate makes a gate for max holders; max <= 0 admits everyone.
func NewGate(max int) *Gate { return &Gate{max: int64(max)} }

// Enter takes a place and reports whether there was one; a true Enter
// must be followed by one Leave. A nil gate admits everyone.
func (g *Gate) Enter() bool {
	if g == nil || g.max <= 0 {
		return true
	}
	if g.n.Add(1) > g.max {
		g.n.Add(-1)
		return false
	}
	return true
}

// Leave gives a place back.
func (g *Gate) Leave() {
	if g != nil && g.max > 0 {
		g.n.Add(-1)
	}
}

// InUse is the number of holders now.
func (g *Gate) InUse() int64 {
	if g == nil {
		return 0
	}
	return g.n.Load()
}

// PerClient counts open connections per client address and refuses more
// than Max from one. IPv6 clients are grouped by prefix (a /64 is one
// customer); addresses in Exempt (the trusted proxies, whose connections
// carry many clients) are not counted. Memory: one map entry per address
// with a connection open, removed with its last connection.
type PerClient struct {
	max    int32
	v6Bits int
	exempt []netip.Prefix

	mu   sync.Mutex
	open map[netip.Addr]int32
}

// NewPerClient makes the counter; max <= 0 refuses nothing.
func NewPerClient(max, ipv6Prefix int, exempt []netip.Prefix) *PerClient {
	return &PerClient{max: int32(max), v6Bits: ipv6Prefix, exempt: exempt, open: map[netip.Addr]int32{}}
}

// Acquire counts a new connection from a and reports whether it may stay;
// key is what Release takes (invalid when nothing was counted).
func (p *PerClient) Acquire(a netip.Addr) (key netip.Addr, ok bool) {
	if p == nil || p.max <= 0 || !a.IsValid() {
		return netip.Addr{}, true
	}
	a = a.Unmap()
	for _, e := range p.exempt {
		if e.Contains(a) {
			return netip.Addr{}, true
		}
	}
	if a.Is6() && p.v6Bits > 0 && p.v6Bits < 128 {
		if pf, err := a.Prefix(p.v6Bits); err == nil {
			a = pf.Addr()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.open[a]
	if n >= p.max {
		return netip.Addr{}, false
	}
	p.open[a] = n + 1
	return a, true
}

// Release uncounts a connection Acquire counted under key.
func (p *PerClient) Release(key netip.Addr) {
	if p == nil || !key.IsValid() {
		return
	}
	p.mu.Lock()
	if n := p.open[key]; n <= 1 {
		delete(p.open, key)
	} else {
		p.open[key] = n - 1
	}
	p.mu.Unlock()
}

// Clients is how many addresses (or IPv6 prefixes) have connections open.
func (p *PerClient) Clients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}

// Refusal is the whole HTTP/1.1 response sent on a connection refused
// before any request was read: 503, naming the limit, closing.
func Refusal(limit string) []byte {
	body := "too many connections from this client\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\n" +
		LimitHeader + ": " + limit + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Retry-After: 1\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

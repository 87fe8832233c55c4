package healthd

import (
	"net"
	"net/netip"
	"time"
)

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// resolve asks the resolver once per address until the cache is cleared
// (Refresh: neighbours changed; Tick: unresolved next hops, and every
// nextHopTTL), so a reconcile over many VIPs sharing backends does not dump
// the neighbour table once per VIP-backend pair.
func (d *Daemon) resolve(a netip.Addr, onLink bool) (net.HardwareAddr, error) {
	if d.opts.Resolver == nil {
		return zeroMAC, nil
	}
	k := nextHopKey{a, onLink}
	if r, ok := d.nextHops[k]; ok {
		return r.mac, r.err
	}
	mac, err := d.opts.Resolver.Resolve(a, onLink)
	d.nextHops[k] = nextHopResult{mac, err}
	return mac, err
}

type nextHopKey struct {
	addr   netip.Addr
	onLink bool
}

type nextHopResult struct {
	mac net.HardwareAddr
	err error
}

// nextHopTTL bounds how long a resolved next hop is trusted without a
// neighbour event (a route change sends none).
const nextHopTTL = 30 * time.Second

// unresolvedLocked reports whether a backend waits for its next hop.
func (d *Daemon) unresolvedLocked() bool {
	for _, dv := range d.dp.vips {
		for _, db := range dv.backends {
			if db.err != "" {
				return true
			}
		}
	}
	return false
}

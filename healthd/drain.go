package healthd

import (
	"net/netip"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

// Drain stops new flows to a backend; it is removed after timeout (0: the
// VIP's drain timeout) or once idle.
func (s *State) Drain(k api.VIPKey, a netip.Addr, timeout time.Duration, now time.Time) error {
	if timeout < 0 {
		return api.FieldErr("timeout", "%s: allowed is a positive duration", timeout)
	}
	v, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	if timeout == 0 {
		timeout = v.DrainTimeout
	}
	b.Admin = api.Draining
	b.DrainStart = now
	b.DrainTimeout = timeout
	return nil
}

// Undrain makes a draining backend active again.
func (s *State) Undrain(k api.VIPKey, a netip.Addr) error {
	_, b, err := s.Backend(k, a)
	if err != nil {
		return err
	}
	if b.Admin != api.Draining {
		return api.FieldErr("backend", "%s of vip %s is %s, not draining", a, k, b.Admin)
	}
	b.Admin = api.Active
	b.DrainStart = time.Time{}
	b.DrainTimeout = 0
	return nil
}

// Drain stops new flows to a backend (timeout 0: the VIP's drain timeout).
func (d *Daemon) Drain(k api.VIPKey, a netip.Addr, timeout time.Duration) error {
	return d.change(func(s *State, now time.Time) error { return s.Drain(k, a, timeout, now) })
}

// Undrain makes a draining backend active again.
func (d *Daemon) Undrain(k api.VIPKey, a netip.Addr) error {
	return d.change(func(s *State, _ time.Time) error { return s.Undrain(k, a) })
}

// finishedDrainsLocked lists the draining backends whose drain is over: the
// timeout passed, or no packet reached them for the idle period (read from
// the counter samples).
func (d *Daemon) finishedDrainsLocked(now time.Time) []BackendRef {
	idle := d.opts.DrainIdle
	if d.cfg != nil && d.cfg.DrainIdle != 0 {
		idle = time.Duration(d.cfg.DrainIdle)
	}
	var done []BackendRef
	for _, v := range d.cur.VIPs {
		for _, b := range v.Backends {
			if b.Admin != api.Draining {
				continue
			}
			if now.Sub(b.DrainStart) >= b.DrainTimeout {
				done = append(done, BackendRef{v.Key, b.Addr})
				d.log.Info("drain finished: timeout", "vip", v.Key.String(), "backend", b.Addr.String())
				continue
			}
			if s := d.dp.sampleOf(v.Key, b.Addr); s != nil && now.Sub(b.DrainStart) >= idle && now.Sub(s.moved) >= idle {
				done = append(done, BackendRef{v.Key, b.Addr})
				d.log.Info("drain finished: idle", "vip", v.Key.String(), "backend", b.Addr.String(), "idle", now.Sub(s.moved).String())
			}
		}
	}
	return done
}

// finishDrainsLocked removes backends whose drain is over. The reconcile
// takes them out of the datapath in order (finishVIP): their counters are
// retired into the VIP's total, then their IDs freed.
func (d *Daemon) finishDrainsLocked(done []BackendRef) {
	next := d.cur.Clone()
	for _, r := range done {
		_ = next.RemoveBackend(r.VIP, r.Address)
	}
	if err := d.commitLocked(d.base, next); err != nil {
		d.log.Error("remove drained backends", "err", err)
	}
}

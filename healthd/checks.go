package healthd

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// healthOf returns the health of a backend and whether it counts as healthy.
func (d *Daemon) healthOf(v *VIP, b *Backend) (*healthInfo, bool) {
	id := b.checkID
	if id == "" {
		return &healthInfo{state: HealthUnchecked}, true
	}
	h := d.health[id]
	if h == nil {
		return &healthInfo{state: HealthUnknown}, false
	}
	return h, h.state == HealthHealthy
}

// checkID names the effective check of a backend; backends of several VIPs
// with the same check share it. "" means unchecked.
func checkID(v *VIP, b *Backend) string {
	c := v.checkFor(b)
	if c == nil {
		return ""
	}
	t := netip.AddrPortFrom(b.Addr, c.Port)
	var sb strings.Builder
	sb.WriteString(c.Kind + "://" + t.String())
	if c.Kind != "tcp" {
		sb.WriteString(orDefault(c.Path, "/"))
		if c.Host != "" {
			sb.WriteString(" host=" + c.Host)
		}
	}
	if c.Interval != 0 || c.Timeout != 0 || c.Rise != 0 || c.Fall != 0 {
		fmt.Fprintf(&sb, " interval=%s timeout=%s rise=%d fall=%d", c.Interval, c.Timeout, c.Rise, c.Fall)
	}
	return sb.String()
}

// syncChecksLocked makes the prober run exactly the checks the desired
// state needs.
func (d *Daemon) syncChecksLocked() {
	want := map[string]HealthCheck{}
	for _, v := range d.cur.VIPs {
		for _, b := range v.Backends {
			id := b.checkID
			if id == "" {
				continue
			}
			warm := d.warm[v.Key][b.Addr]
			if c, ok := want[id]; ok {
				if warm && !c.StartHealthy {
					c.StartHealthy = true
					want[id] = c
				}
				continue
			}
			c := v.checkFor(b)
			want[id] = HealthCheck{
				Kind: c.Kind, Target: netip.AddrPortFrom(b.Addr, c.Port),
				Interval: time.Duration(c.Interval), Timeout: time.Duration(c.Timeout),
				Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host,
				StartHealthy: warm,
			}
		}
	}
	d.warm = nil
	for id := range d.checks {
		if _, ok := want[id]; !ok {
			if d.opts.Prober != nil {
				d.opts.Prober.Remove(id)
			}
			delete(d.checks, id)
			delete(d.health, id)
		}
	}
	for id, c := range want {
		if _, ok := d.checks[id]; ok {
			continue
		}
		if d.opts.Prober != nil {
			if err := d.opts.Prober.Set(id, c); err != nil {
				d.log.Error("set health check", "check", id, "err", err)
				continue
			}
		}
		d.checks[id] = c
		state := HealthUnknown
		if c.StartHealthy {
			state = HealthHealthy
		}
		d.health[id] = &healthInfo{state: state, since: d.opts.Clock.Now()}
	}
}

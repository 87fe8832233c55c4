package healthd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/bgp"
)

// The daemon announces a VIP address over BGP only while it can serve it:
// the datapath is attached, a first health round has finished since the
// start, and every announcing VIP on the address has its table installed
// and at least min_healthy healthy backends (the panic rule still decides
// what is forwarded). Otherwise the address is withdrawn, and routers send
// its traffic to the other balancers.
//
// Leaving (drain-self, or shutdown) is graceful: the announced routes get
// the GRACEFUL_SHUTDOWN community first, so routers that honour it move new
// traffic away while the routes still exist, then they are withdrawn; the
// datapath keeps forwarding whatever still arrives.

// ErrNoBGP: the request needs a bgp section in the configuration.
var ErrNoBGP = errors.New("bgp is not configured (add a bgp section: docs/fleet.md)")

// drainedFile in the state directory remembers drain-self across restarts.
const drainedFile = "drained"

// Speaker is what the daemon needs of a BGP speaker: *bgp.Speaker, started.
type Speaker interface {
	// Sync announces exactly the addresses of want (with
	// GRACEFUL_SHUTDOWN where true) and withdraws the others.
	Sync(want map[netip.Addr]bool) error
	Announced() []bgp.Announcement
	Counts() bgp.Counts
	Sessions(ctx context.Context) ([]bgp.Session, error)
	Stop()
}

// announcer is the daemon's BGP state; the Daemon's mutex guards it.
type announcer struct {
	speaker   Speaker
	cfg       bgp.Config
	gshutWait time.Duration
	leaveWait time.Duration
	attached  bool
	// firstRound: every check had a result since the start, so the
	// health states are measured, not adopted or assumed.
	firstRound bool
	roundDone  atomic.Bool // firstRound, readable without the mutex
	seen       map[string]bool
	drained    bool
	leaving    bool
	// gshutUntil: while drained or leaving, routes carry GRACEFUL_SHUTDOWN
	// until then and are withdrawn after.
	gshutUntil time.Time
	stopTimer  func() bool
	reasons    map[netip.Addr]string // why an address is not announced
	lastErr    error
}

// EnableBGP makes the daemon announce its servable VIPs with a started
// speaker. Call it once, before SetAttached.
func (d *Daemon) EnableBGP(s Speaker, c bgp.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, l := c.Waits()
	a := &announcer{speaker: s, cfg: c, gshutWait: g, leaveWait: l, seen: map[string]bool{}}
	if d.opts.StateDir != "" {
		if _, err := os.Stat(filepath.Join(d.opts.StateDir, drainedFile)); err == nil {
			a.drained = true
			d.log.Warn("drained by drain-self before the restart: nothing is announced until undrain-self")
		}
	}
	d.bgp = a
}

// SetAttached records that the datapath is attached; announcements may
// start.
func (d *Daemon) SetAttached() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bgp == nil {
		return
	}
	d.bgp.attached = true
	d.announceLocked()
}

// CheckResult records that check id produced a result. Once every check
// has one, the first health round is over.
func (d *Daemon) CheckResult(id string) {
	a := d.bgp
	if a == nil || a.roundDone.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.firstRound {
		return // latched meanwhile
	}
	a.seen[id] = true
	d.announceLocked()
}

// announceLocked makes the announcements match what is servable now. It
// runs after every reconcile and on every change of the inputs above.
func (d *Daemon) announceLocked() {
	a := d.bgp
	if a == nil || !a.attached {
		return
	}
	if !a.firstRound {
		done := true
		for id := range d.checks {
			if !a.seen[id] {
				done = false
				break
			}
		}
		if done {
			a.firstRound = true
			a.roundDone.Store(true)
			a.seen = nil
			d.log.Info("first health round finished: servable VIPs are announced")
		}
	}
	want, reasons := d.servableLocked()
	if a.drained || a.leaving {
		why := "drained (drain-self)"
		if a.leaving {
			why = "the daemon is leaving"
		}
		gshut := d.opts.Clock.Now().Before(a.gshutUntil)
		for addr := range want {
			reasons[addr] = why
		}
		want = map[netip.Addr]bool{}
		if gshut {
			for _, an := range a.speaker.Announced() {
				want[an.VIP] = true
				reasons[an.VIP] = why + ": GRACEFUL_SHUTDOWN until " + a.gshutUntil.Format(time.TimeOnly)
			}
		}
	}
	a.reasons = reasons
	a.lastErr = a.speaker.Sync(want)
	if a.lastErr != nil {
		d.log.Error("bgp announcements", "err", a.lastErr)
	}
}

// servableLocked returns the addresses to announce and, for the others,
// why not.
func (d *Daemon) servableLocked() (map[netip.Addr]bool, map[netip.Addr]string) {
	want := map[netip.Addr]bool{}
	reasons := map[netip.Addr]string{}
	blocked := map[netip.Addr]bool{}
	for _, v := range d.cur.SortedVIPs() {
		addr := v.Key.Addr
		if !v.Announce {
			if _, ok := reasons[addr]; !ok && !blocked[addr] {
				reasons[addr] = v.Key.String() + ": announce is false"
			}
			continue
		}
		if why := d.notServableLocked(v); why != "" {
			if !blocked[addr] {
				reasons[addr] = v.Key.String() + ": " + why
			}
			blocked[addr] = true
			continue
		}
		want[addr] = false
	}
	for addr := range want {
		if blocked[addr] {
			delete(want, addr)
		} else {
			delete(reasons, addr)
		}
	}
	return want, reasons
}

// notServableLocked says why v cannot be served here, "" if it can.
func (d *Daemon) notServableLocked(v *VIP) string {
	a := d.bgp
	if !a.attached {
		return "datapath not attached"
	}
	if !a.firstRound {
		return "first health round not finished"
	}
	dv := d.dp.vips[v.Key]
	switch {
	case dv == nil || !dv.written || !dv.table:
		return "table not installed"
	case dv.err != "":
		return "not fully installed: " + dv.err
	case dv.healthy < v.MinHealthy:
		return fmt.Sprintf("%d healthy backends, min_healthy is %d", dv.healthy, v.MinHealthy)
	}
	return ""
}

// DrainSelf makes this balancer leave its routers while it keeps
// forwarding: its routes get GRACEFUL_SHUTDOWN, and are withdrawn after
// the graceful-shutdown wait. It lasts until UndrainSelf, also across
// restarts.
func (d *Daemon) DrainSelf() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.bgp
	if a == nil {
		return ErrNoBGP
	}
	if a.drained {
		return nil
	}
	if d.opts.StateDir != "" {
		if err := os.WriteFile(filepath.Join(d.opts.StateDir, drainedFile), []byte("drain-self\n"), 0o644); err != nil {
			return fmt.Errorf("drain-self: remember it: %w", err)
		}
	}
	a.drained = true
	d.startGracefulShutdownLocked()
	d.log.Info("drain-self: routes carry GRACEFUL_SHUTDOWN, then are withdrawn", "wait", a.gshutWait)
	return nil
}

// UndrainSelf reverses DrainSelf: servable VIPs are announced again.
func (d *Daemon) UndrainSelf() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.bgp
	if a == nil {
		return ErrNoBGP
	}
	if a.leaving {
		return errors.New("undrain-self: the daemon is shutting down")
	}
	if d.opts.StateDir != "" {
		if err := os.Remove(filepath.Join(d.opts.StateDir, drainedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("undrain-self: %w", err)
		}
	}
	a.drained = false
	a.gshutUntil = time.Time{}
	if a.stopTimer != nil {
		a.stopTimer()
		a.stopTimer = nil
	}
	d.announceLocked()
	d.log.Info("undrain-self: servable VIPs are announced again")
	return nil
}

// startGracefulShutdownLocked marks the announced routes with
// GRACEFUL_SHUTDOWN now and withdraws them after the wait.
func (d *Daemon) startGracefulShutdownLocked() {
	a := d.bgp
	a.gshutUntil = d.opts.Clock.Now().Add(a.gshutWait)
	if a.stopTimer != nil {
		a.stopTimer()
	}
	a.stopTimer = d.opts.Clock.AfterFunc(a.gshutWait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		a.stopTimer = nil
		d.announceLocked()
	})
	d.announceLocked()
}

// Leave is the graceful leave on shutdown: GRACEFUL_SHUTDOWN on the
// announced routes, the graceful-shutdown wait, withdrawal, the leave wait
// (the datapath forwards what still arrives), then the sessions close. It
// returns at once when nothing is announced, and early when ctx ends.
func (d *Daemon) Leave(ctx context.Context) {
	d.mu.Lock()
	a := d.bgp
	if a == nil {
		d.mu.Unlock()
		return
	}
	announced := len(a.speaker.Announced()) > 0
	a.leaving = true
	if announced && !a.drained {
		d.startGracefulShutdownLocked()
	}
	wait := time.Until(a.gshutUntil)
	d.mu.Unlock()
	if announced {
		d.log.Info("leaving: routes carry GRACEFUL_SHUTDOWN, then are withdrawn", "wait", max(wait, 0), "then", a.leaveWait)
		sleep(ctx, wait)
		d.mu.Lock()
		a.gshutUntil = time.Time{}
		d.announceLocked()
		d.mu.Unlock()
		sleep(ctx, a.leaveWait)
	}
	a.speaker.Stop()
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// bgpStatusLocked is the BGP part of Status; nil without BGP.
func (d *Daemon) bgpStatusLocked() *api.BGPStatus {
	a := d.bgp
	if a == nil {
		return nil
	}
	st := &api.BGPStatus{LocalAS: a.cfg.LocalAS, RouterID: a.cfg.RouterID, Drained: a.drained, Leaving: a.leaving,
		Sessions: []api.BGPSession{}, Addresses: []api.BGPAddress{}}
	if d.opts.Clock.Now().Before(a.gshutUntil) {
		st.GracefulShutdownUntil = a.gshutUntil
	}
	c := a.speaker.Counts()
	st.Announcements, st.Withdrawals = c.Announcements, c.Withdrawals
	if a.lastErr != nil {
		st.Error = a.lastErr.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ss, err := a.speaker.Sessions(ctx); err == nil {
		for _, s := range ss {
			st.Sessions = append(st.Sessions, api.BGPSession{Peer: s.Peer, AS: s.AS, State: s.State,
				Uptime: api.Duration(s.Uptime), HoldTime: api.Duration(s.HoldTime), Sent: s.Sent})
		}
	} else if st.Error == "" {
		st.Error = err.Error()
	}
	seen := map[netip.Addr]bool{}
	for _, an := range a.speaker.Announced() {
		seen[an.VIP] = true
		st.Addresses = append(st.Addresses, api.BGPAddress{Address: an.VIP.String(), Announced: true,
			GracefulShutdown: an.GracefulShutdown})
	}
	for addr, why := range a.reasons {
		if !seen[addr] {
			st.Addresses = append(st.Addresses, api.BGPAddress{Address: addr.String(), Reason: why})
		}
	}
	slices.SortFunc(st.Addresses, func(x, y api.BGPAddress) int {
		return netip.MustParseAddr(x.Address).Compare(netip.MustParseAddr(y.Address))
	})
	return st
}

// announcedLocked reports whether addr is announced (without GRACEFUL_SHUTDOWN);
// without BGP every servable address counts as announced.
func (d *Daemon) announcedLocked(addr netip.Addr) bool {
	if d.bgp == nil {
		return true
	}
	for _, an := range d.bgp.speaker.Announced() {
		if an.VIP == addr {
			return !an.GracefulShutdown
		}
	}
	return false
}

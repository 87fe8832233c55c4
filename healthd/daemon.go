// Package healthd is the L4 daemon: "the daemon that runs health checks and
// rewrites the maps". It holds the desired state (the YAML configuration,
// then the runtime overlay of API changes), the admin states and the panic
// rule, reconciles the BPF maps through a Datapath following the ordering
// rule, persists the overlay atomically, and serves the Unix-socket API and
// Prometheus metrics. The API's contract and client are in healthd/api, so
// the CLI links this package only for its daemon verb.
package healthd

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

// Options configure a Daemon. Zero fields take the defaults in comments.
type Options struct {
	Datapath Datapath     // required
	Prober   Prober       // nil: no health checks run (backends stay unknown)
	Resolver Resolver     // nil: every backend gets a zero MAC (tests only)
	Clock    Clock        // default the system clock
	Build    TableBuilder // default maglev.Build
	Log      *slog.Logger // default discards
	StateDir string       // "" keeps the overlay in memory only
	// Debounce delays the reconcile after a health change so that changes
	// arriving together cause one rebuild. Default 20ms.
	Debounce time.Duration
	// DrainIdle: a draining backend whose counter did not move for this
	// long is removed before its timeout. Default DefaultDrainIdle; the
	// configuration's drain_idle overrides it.
	DrainIdle time.Duration
	// MaxVIPs and MaxBackends bound the IDs handed out. Default the
	// loader's map sizes.
	MaxVIPs, MaxBackends uint32
}

// Daemon is the L4 control plane. Its methods are safe for concurrent use.
type Daemon struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	cfg    *Config
	base   *State // from the configuration alone
	cur    *State // the desired state
	health map[string]*healthInfo
	checks map[string]HealthCheck // what the prober runs
	// checksOf is the desired state the checks were synced with; a
	// reconcile for the same state (a health change) need not sync them.
	checksOf *State
	dp       dpState
	timer    func() bool // pending debounced reconcile
	lastErr  error       // of the last reconcile
	adopted  bool        // IDs of a previous daemon taken over
	// warnings are conditions found at start that the operator should fix
	// (a veth peer without XDP); shown by status.
	warnings []string
	// warm names the backends that were in an adopted table: their checks
	// start healthy, so a restart does not pull established flows off
	// them while the first checks are still rising. Used once, then nil.
	warm map[api.VIPKey]map[netip.Addr]bool
	// nextHops caches resolutions; cleared on neighbour changes.
	nextHops   map[nextHopKey]nextHopResult
	nextHopGen uint64 // counts clearings, from 1; backends keep their answer for one
	noMemo     bool   // tests: every reconcile reads every backend (prepareVIP)
	nextHopsAt time.Time
	stats      reconcileStats
	metrics    *metrics
	bgp        *announcer // nil without BGP (announce.go)
}

type healthInfo struct {
	state   string
	lastErr string
	since   time.Time
}

type reconcileStats struct {
	rebuilds     uint64        // tables computed
	installs     uint64        // tables written
	patches      uint64        // of which rewritten in place (the moved slots only)
	memoSkips    uint64        // VIP-backend pairs a reconcile did not read (dpVIP.memo)
	lastDuration time.Duration // of the last reconcile that changed a table
	lastPhases   reconcilePhases
}

// reconcilePhases split a reconcile's duration: planning (backends written
// before the tables, tables computed), installing the tables, finishing
// (VIP entries, backends written after, removals); the rest is bookkeeping.
type reconcilePhases struct {
	plan, install, finish time.Duration
}

// New returns a daemon with an empty desired state; call Apply with the
// configuration.
func New(o Options) (*Daemon, error) {
	if o.Datapath == nil {
		return nil, errors.New("new daemon: no datapath")
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Build == nil {
		o.Build = maglevBuild
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Debounce == 0 {
		o.Debounce = 20 * time.Millisecond
	}
	if o.DrainIdle == 0 {
		o.DrainIdle = DefaultDrainIdle
	}
	empty := &State{VIPs: map[api.VIPKey]*VIP{}}
	return &Daemon{
		opts:     o,
		log:      o.Log,
		cfg:      &Config{},
		base:     empty,
		cur:      empty.Clone(),
		health:   map[string]*healthInfo{},
		checks:   map[string]HealthCheck{},
		dp:       newDPState(o.MaxVIPs, o.MaxBackends),
		metrics:  newMetrics(),
		nextHops: map[nextHopKey]nextHopResult{},

		nextHopGen: 1,
	}, nil
}

// Apply makes a configuration the base of the desired state, then applies
// the overlay from the state directory on top (entries the configuration
// contradicts are dropped and logged) and reconciles. At start it is the
// first call; on SIGHUP it is a reload. A configuration that does not
// validate, or a state directory that cannot be read, is refused and the
// running state kept.
func (d *Daemon) Apply(c *Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	base, err := NewState(c)
	if err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	ov := &Overlay{Version: overlayVersion}
	if d.opts.StateDir != "" {
		if ov, err = LoadOverlay(d.opts.StateDir); err != nil {
			return fmt.Errorf("apply config: %w", err)
		}
	}
	cur := base.Clone()
	for _, msg := range ov.Apply(cur) {
		d.log.Warn("overlay entry dropped: the configuration contradicts it", "entry", msg)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.adopted {
		if err := d.adoptLocked(); err != nil {
			return fmt.Errorf("adopt the running datapath: %w", err)
		}
		d.adopted = true
	}
	if err := d.commitLocked(base, cur); err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	d.cfg = c
	return nil
}

// commitLocked persists the overlay of cur against base, makes cur the
// desired state and reconciles. When persisting fails nothing changes; when
// the datapath refuses, the previous state is restored.
func (d *Daemon) commitLocked(base, cur *State) error {
	if d.opts.StateDir != "" {
		if err := Diff(base, cur).Save(d.opts.StateDir); err != nil {
			return err
		}
	}
	oldBase, oldCur := d.base, d.cur
	d.base, d.cur = base, cur
	if err := d.reconcileLocked(); err != nil {
		d.base, d.cur = oldBase, oldCur
		if d.opts.StateDir != "" {
			_ = Diff(oldBase, oldCur).Save(d.opts.StateDir)
		}
		if rerr := d.reconcileLocked(); rerr != nil {
			d.log.Error("restore previous state in the datapath", "err", rerr)
		}
		return err
	}
	return nil
}

// change runs a mutation on a copy of the desired state and commits it: it
// applies completely or not at all.
func (d *Daemon) change(fn func(s *State, now time.Time) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.cur.Clone()
	if err := fn(next, d.opts.Clock.Now()); err != nil {
		return err
	}
	return d.commitLocked(d.base, next)
}

// AddVIP adds a VIP (with backends, if given).
func (d *Daemon) AddVIP(c api.VIPConfig) error {
	return d.change(func(s *State, _ time.Time) error { return s.AddVIP(c) })
}

// RemoveVIP removes a VIP and its backends.
func (d *Daemon) RemoveVIP(k api.VIPKey) error {
	return d.change(func(s *State, _ time.Time) error { return s.RemoveVIP(k) })
}

// AddBackend adds a backend to a VIP.
func (d *Daemon) AddBackend(k api.VIPKey, c api.BackendConfig) error {
	return d.change(func(s *State, _ time.Time) error { return s.AddBackend(k, c) })
}

// RemoveBackend removes a backend at once.
func (d *Daemon) RemoveBackend(k api.VIPKey, a netip.Addr) error {
	return d.change(func(s *State, _ time.Time) error { return s.RemoveBackend(k, a) })
}

// SetWeight changes a backend's weight.
func (d *Daemon) SetWeight(k api.VIPKey, a netip.Addr, w uint32) error {
	return d.change(func(s *State, _ time.Time) error { return s.SetWeight(k, a, w) })
}

// HealthChanged records a health result for a check ID and schedules a
// debounced reconcile, so that many changes arriving together cause one
// rebuild per affected backend set.
func (d *Daemon) HealthChanged(id, state, lastErr string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.health[id]
	if !ok {
		return // a check removed meanwhile
	}
	if h.state != state {
		h.since = at
		d.log.Debug("health changed", "check", id, "from", h.state, "to", state, "err", lastErr)
	}
	h.state, h.lastErr = state, lastErr
	d.scheduleLocked()
}

// Refresh schedules a debounced reconcile, e.g. after neighbours changed.
func (d *Daemon) Refresh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearNextHopsLocked()
	d.scheduleLocked()
}

func (d *Daemon) scheduleLocked() {
	if d.timer != nil {
		return
	}
	d.timer = d.opts.Clock.AfterFunc(d.opts.Debounce, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.timer = nil
		if err := d.reconcileLocked(); err != nil {
			d.log.Error("reconcile", "err", err)
		}
	})
}

// Tick does the periodic work: it samples counters (for rates and idle
// drains), removes backends whose drain is over, and refreshes next hops.
// Run calls it every second.
func (d *Daemon) Tick() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Clock.Now()
	d.sampleLocked(now)
	if done := d.finishedDrainsLocked(now); len(done) > 0 {
		d.finishDrainsLocked(done)
		return
	}
	if d.unresolvedLocked() || now.Sub(d.nextHopsAt) >= nextHopTTL {
		d.clearNextHopsLocked()
		d.nextHopsAt = now
		if err := d.reconcileLocked(); err != nil {
			d.log.Error("reconcile", "err", err)
		}
	}
}

// Config returns the configuration last applied.
func (d *Daemon) Config() *Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

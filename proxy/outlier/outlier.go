// Package outlier ejects backends that fail repeatedly (passive health
// detection from the proxy's own requests).
//
// The proxy reports the outcome of every request with Report. After
// Config.ConsecutiveFailures failures in a row a backend is ejected for
// BaseEjection × (number of times it has been ejected), capped at
// MaxEjection; the count falls by one for every BaseEjection the backend
// then spends in service without being ejected again. At most
// MaxEjectedPercent of the pool is ejected at once (at least one backend when
// the pool has two or more and the percentage is above 0): a backend that
// reaches the threshold while the limit is taken stays in service, and is
// ejected on its next failure once there is room.
//
// Ejected is lock-free and cheap enough to call for every pick; Report takes
// a lock only when a backend crosses the threshold. Time comes from the
// caller, so tests use a fake clock.
package outlier

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjection        = 30 * time.Second
	DefaultMaxEjection         = 5 * time.Minute
	DefaultMaxEjectedPercent   = 50
)

// ErrConfig is returned, wrapped with the field and value, for a bad Config.
var ErrConfig = errors.New("invalid outlier detection setting")

// Config tunes a Detector.
type Config struct {
	// ConsecutiveFailures in a row eject a backend. Default 5.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length; the n-th lasts n times as
	// long. Default 30s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length. Default 5m.
	MaxEjection time.Duration
	// MaxEjectedPercent of the pool's backends may be ejected at once,
	// 0–100. Default 50.
	MaxEjectedPercent int
	// OnEvent, when set, is called (outside the detector's lock, from the
	// goroutine that called Report or Ejected) for every ejection, return
	// and refused ejection; e.g. to count them in metrics.
	OnEvent func(Event)
}

// EventKind says what happened to a backend.
type EventKind string

// The events.
const (
	// Ejected: the backend is out of service until Event.Until.
	Ejected EventKind = "ejected"
	// Returned: the ejection ended; noticed at the first Ejected or Report
	// call after its end.
	Returned EventKind = "returned"
	// Refused: the backend reached the threshold but the pool already has
	// as many backends ejected as MaxEjectedPercent allows.
	Refused EventKind = "refused"
)

// Event reports a change of a backend's state.
type Event struct {
	Kind    EventKind
	Backend string
	// Ejections is how many times the backend has been ejected (with decay).
	Ejections int
	// Until is the end of the ejection, for Ejected.
	Until time.Time
	At    time.Time
}

// Status is one backend's state, for display.
type Status struct {
	Backend             string
	ConsecutiveFailures int
	Ejections           int
	// EjectedUntil is zero when the backend is in service.
	EjectedUntil time.Time
}

type state struct {
	id       string
	failures atomic.Int64
	until    atomic.Int64 // Unix nanoseconds; ejected while now < until

	returned atomic.Bool // the end of the last ejection has been reported

	// under Detector.mu
	ejections int
	decayMark time.Time // end of the last ejection, moved on by each decay step
}

// Detector tracks the backends of one pool. It is safe for concurrent use.
type Detector struct {
	cfg      Config
	mu       sync.Mutex // serialises ejections and SetBackends
	backends atomic.Pointer[map[string]*state]
}

// New returns a detector for a pool with the given backend IDs.
func New(cfg Config, backends []string) (*Detector, error) {
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if cfg.BaseEjection == 0 {
		cfg.BaseEjection = DefaultBaseEjection
	}
	if cfg.MaxEjection == 0 {
		cfg.MaxEjection = DefaultMaxEjection
	}
	if cfg.MaxEjectedPercent == 0 {
		cfg.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	switch {
	case cfg.ConsecutiveFailures < 1:
		return nil, fmt.Errorf("%w: consecutive_failures %d: want 1 or more", ErrConfig, cfg.ConsecutiveFailures)
	case cfg.BaseEjection < time.Millisecond:
		return nil, fmt.Errorf("%w: base_ejection %v: want 1ms or more", ErrConfig, cfg.BaseEjection)
	case cfg.MaxEjection < cfg.BaseEjection:
		return nil, fmt.Errorf("%w: max_ejection %v: want at least base_ejection (%v)", ErrConfig, cfg.MaxEjection, cfg.BaseEjection)
	case cfg.MaxEjectedPercent < 0 || cfg.MaxEjectedPercent > 100:
		return nil, fmt.Errorf("%w: max_ejected_percent %d: allowed 0 to 100", ErrConfig, cfg.MaxEjectedPercent)
	}
	d := &Detector{cfg: cfg}
	d.SetBackends(backends)
	return d, nil
}

// SetBackends replaces the pool's membership: new IDs start in service with
// a clean record, IDs that stay keep theirs, removed IDs are forgotten.
func (d *Detector) SetBackends(ids []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.load()
	next := make(map[string]*state, len(ids))
	for _, id := range ids {
		if s, ok := old[id]; ok {
			next[id] = s
		} else {
			st := &state{id: id}
			st.returned.Store(true)
			next[id] = st
		}
	}
	d.backends.Store(&next)
}

func (d *Detector) load() map[string]*state {
	if m := d.backends.Load(); m != nil {
		return *m
	}
	return nil
}

// Report records the outcome of one request to a backend. Reports for IDs
// not in the pool are ignored.
func (d *Detector) Report(backendID string, failed bool, now time.Time) {
	s := d.load()[backendID]
	if s == nil {
		return
	}
	if !failed {
		if s.failures.Load() != 0 {
			s.failures.Store(0)
		}
		if !s.returned.Load() {
			d.settle(s, now)
		}
		return
	}
	if !s.returned.Load() {
		if now.UnixNano() < s.until.Load() {
			return // already ejected: a request that was in flight
		}
		d.settle(s, now)
	}
	if s.failures.Add(1) < int64(d.cfg.ConsecutiveFailures) {
		return
	}
	d.eject(s, now)
}

// Ejected reports whether a backend is out of service at now. Unknown IDs are
// not ejected.
func (d *Detector) Ejected(backendID string, now time.Time) bool {
	s := d.load()[backendID]
	if s == nil {
		return false
	}
	if now.UnixNano() < s.until.Load() {
		return true
	}
	if !s.returned.Load() {
		d.settle(s, now)
	}
	return false
}

// settle reports, once, the end of a backend's ejection.
func (d *Detector) settle(s *state, now time.Time) {
	d.mu.Lock()
	until := s.until.Load()
	if s.returned.Load() || now.UnixNano() < until {
		d.mu.Unlock()
		return
	}
	s.returned.Store(true)
	s.failures.Store(0)
	ev := Event{Kind: Returned, Backend: s.id, Ejections: s.ejections, At: now}
	d.mu.Unlock()
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(ev)
	}
}

// decay lowers the ejection count by one for every BaseEjection spent in
// service since the last ejection ended. Called under d.mu.
func (d *Detector) decay(s *state, now time.Time) {
	if now.UnixNano() < s.until.Load() {
		return
	}
	for s.ejections > 0 && now.Sub(s.decayMark) >= d.cfg.BaseEjection {
		s.ejections--
		s.decayMark = s.decayMark.Add(d.cfg.BaseEjection)
	}
}

func (d *Detector) eject(s *state, now time.Time) {
	var ev Event
	var returned []Event
	d.mu.Lock()
	if now.UnixNano() < s.until.Load() {
		d.mu.Unlock()
		return
	}
	backends := d.load()
	limit := len(backends) * d.cfg.MaxEjectedPercent / 100
	if limit == 0 && d.cfg.MaxEjectedPercent > 0 && len(backends) > 1 {
		limit = 1
	}
	ejected := 0
	for _, o := range backends {
		if now.UnixNano() < o.until.Load() {
			ejected++
		} else if !o.returned.Load() && o != s {
			o.returned.Store(true)
			o.failures.Store(0)
			returned = append(returned, Event{Kind: Returned, Backend: o.id, Ejections: o.ejections, At: now})
		}
	}
	d.decay(s, now)
	if ejected >= limit {
		ev = Event{Kind: Refused, Backend: s.id, Ejections: s.ejections, At: now}
	} else {
		s.ejections++
		length := min(d.cfg.BaseEjection*time.Duration(s.ejections), d.cfg.MaxEjection)
		until := now.Add(length)
		s.until.Store(until.UnixNano())
		s.returned.Store(false)
		s.failures.Store(0)
		s.decayMark = until
		ev = Event{Kind: Ejected, Backend: s.id, Ejections: s.ejections, Until: until, At: now}
	}
	d.mu.Unlock()
	if d.cfg.OnEvent != nil {
		for _, r := range returned {
			d.cfg.OnEvent(r)
		}
		d.cfg.OnEvent(ev)
	}
}

// Statuses returns every backend's state at now, in no particular order.
func (d *Detector) Statuses(now time.Time) []Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	backends := d.load()
	out := make([]Status, 0, len(backends))
	for _, s := range backends {
		d.decay(s, now)
		st := Status{Backend: s.id, ConsecutiveFailures: int(s.failures.Load()), Ejections: s.ejections}
		if u := s.until.Load(); now.UnixNano() < u {
			st.EjectedUntil = time.Unix(0, u)
		}
		out = append(out, st)
	}
	return out
}

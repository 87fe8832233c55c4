// Package breaker is a circuit breaker for one backend or one pool.
//
// Closed, it lets every request through and watches the outcomes: it opens
// when the failures over a sliding window reach a ratio (once the window holds
// a minimum number of requests), or after a number of failures in a row.
// Open, it refuses every request for an open period that doubles with every
// trip that follows a short closed spell (capped, and jittered so that many
// proxies do not probe in lockstep). When the period ends it is half-open: it
// lets exactly Probes requests through, however many goroutines ask at once;
// it closes when all of them succeed and opens again at the first failure.
//
// Every state change starts a new generation. Allow hands out a Ticket
// carrying the generation; Report ignores the outcome of a ticket from an
// earlier generation, so a slow request sent while the breaker was closed
// cannot close or reopen it after it tripped.
//
// Time comes from the caller, so tests use a fake clock.
package breaker

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config.
const (
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultConsecutiveFailures = 5
	DefaultOpenBase            = 5 * time.Second
	DefaultOpenMax             = 60 * time.Second
	DefaultJitter              = 0.2
	DefaultProbes              = 1
	// windowBuckets is how many slices the sliding window is cut into: the
	// oldest slice leaves the window as a whole.
	windowBuckets = 10
)

// ErrConfig is returned, wrapped with the field and value, for a bad Config.
var ErrConfig = errors.New("invalid circuit breaker setting")

// Config tunes a Breaker. Zero fields take their defaults.
type Config struct {
	// FailureRatio of the requests in the window, reached, opens the
	// breaker; 0 < ratio <= 1. Default 0.5.
	FailureRatio float64
	// MinRequests in the window before the ratio is judged. Default 20.
	MinRequests int
	// Window is the length of the sliding window. Default 10s.
	Window time.Duration
	// ConsecutiveFailures in a row open the breaker; -1 turns this rule
	// off. Default 5.
	ConsecutiveFailures int
	// OpenBase is the first open period; each trip that follows another
	// within OpenMax doubles it. Default 5s.
	OpenBase time.Duration
	// OpenMax caps the open period, before jitter. Default 60s.
	OpenMax time.Duration
	// Jitter spreads each open period uniformly over ±Jitter of its length,
	// 0 to 1; -1 turns jitter off. Default 0.2.
	Jitter float64
	// Probes is how many requests half-open lets through. Default 1.
	Probes int
	// OnChange, when set, is called for every state change, outside the
	// breaker's lock, from the goroutine that caused it.
	OnChange func(Change)
	// Rand returns a number in [0, 1) for the jitter; nil: math/rand/v2.
	Rand func() float64
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.OpenBase == 0 {
		c.OpenBase = DefaultOpenBase
	}
	if c.OpenMax == 0 {
		c.OpenMax = DefaultOpenMax
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	}
	if c.Probes == 0 {
		c.Probes = DefaultProbes
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// Validate checks a config with its defaults applied; the error names the
// field (as written in the proxy's YAML), the value and what is allowed.
func (c Config) Validate() error {
	switch {
	case !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		return fmt.Errorf("%w: failure_ratio %v: allowed above 0 up to 1", ErrConfig, c.FailureRatio)
	case c.MinRequests < 1:
		return fmt.Errorf("%w: min_requests %d: allowed 1 or more", ErrConfig, c.MinRequests)
	case c.Window < windowBuckets*time.Millisecond:
		return fmt.Errorf("%w: window %v: allowed 10ms or more", ErrConfig, c.Window)
	case c.ConsecutiveFailures < -1:
		return fmt.Errorf("%w: consecutive_failures %d: allowed 1 or more, or -1 for off", ErrConfig, c.ConsecutiveFailures)
	case c.OpenBase < time.Millisecond:
		return fmt.Errorf("%w: open_base %v: allowed 1ms or more", ErrConfig, c.OpenBase)
	case c.OpenMax < c.OpenBase:
		return fmt.Errorf("%w: open_max %v: allowed open_base (%v) or more", ErrConfig, c.OpenMax, c.OpenBase)
	case c.Jitter != -1 && !(c.Jitter >= 0 && c.Jitter <= 1):
		return fmt.Errorf("%w: jitter %v: allowed 0 to 1, or -1 for off", ErrConfig, c.Jitter)
	case c.Probes < 1 || c.Probes > 1000:
		return fmt.Errorf("%w: probes %d: allowed 1 to 1000", ErrConfig, c.Probes)
	}
	return nil
}

// State is where a breaker stands.
type State uint8

// The states.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Outcome is the result of an admitted request, as the breaker counts it.
type Outcome uint8

// The outcomes.
const (
	// Success counts for the backend.
	Success Outcome = iota
	// Failure counts against it.
	Failure
	// Ignore counts neither way (the client went away, the client's body
	// was malformed, ...); a half-open probe ending so frees its slot for
	// another probe.
	Ignore
)

// Ticket is what Allow hands to an admitted request, to give back to Report.
type Ticket struct {
	gen   uint64
	probe bool
}

// Change reports a state change.
type Change struct {
	Name     string
	From, To State
	// Generation counts the state changes of the breaker.
	Generation uint64
	// Until is the end of the open period, for To == Open.
	Until time.Time
	// Trips is the number of trips that set the open period's length.
	Trips int
	// Reason says why: "failure_ratio", "consecutive_failures",
	// "probe_failed", "probes_succeeded", "open_period_over".
	Reason string
	At     time.Time
}

// Status is a breaker's state, for display.
type Status struct {
	State               State
	Generation          uint64
	OpenUntil           time.Time // for Open
	Trips               int
	ConsecutiveFailures int
	WindowRequests      int
	WindowFailures      int
	ProbesInFlight      int // for HalfOpen
}

// Breaker is one circuit breaker, safe for concurrent use.
type Breaker struct {
	name string
	cfg  Config

	// closed mirrors state == Closed for lock-free Usable calls.
	closed atomic.Bool

	mu          sync.Mutex
	state       State
	gen         uint64
	until       time.Time // end of the open period
	trips       int
	lastTrip    time.Time
	consecutive int
	window      window
	admitted    int // probes let through in this half-open generation
	succeeded   int // of which succeeded
	pending     []Change
}

// New returns a closed breaker; name identifies it in Change events.
func New(name string, cfg Config) (*Breaker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Breaker{name: name, cfg: cfg}
	b.closed.Store(true)
	b.window.init(cfg.Window)
	return b, nil
}

// Allow says whether a request may go through now; when it may, the Ticket
// must be given back to Report exactly once.
func (b *Breaker) Allow(now time.Time) (Ticket, bool) {
	b.mu.Lock()
	t, ok := b.allowLocked(now)
	ev := b.takePending()
	b.mu.Unlock()
	b.emit(ev)
	return t, ok
}

func (b *Breaker) allowLocked(now time.Time) (Ticket, bool) {
	if b.state == Open {
		if now.Before(b.until) {
			return Ticket{}, false
		}
		b.change(HalfOpen, "open_period_over", now)
	}
	if b.state == HalfOpen {
		if b.admitted >= b.cfg.Probes {
			return Ticket{}, false
		}
		b.admitted++
		return Ticket{gen: b.gen, probe: true}, true
	}
	return Ticket{gen: b.gen}, true
}

// Usable reports whether Allow would let a request through now, without
// taking a probe slot; for pickers that only filter. Lock-free while closed.
func (b *Breaker) Usable(now time.Time) bool {
	if b.closed.Load() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Open:
		return !now.Before(b.until)
	case HalfOpen:
		return b.admitted < b.cfg.Probes
	}
	return true
}

// Report records the outcome of a request admitted with t. Outcomes of
// tickets from an earlier generation are ignored.
func (b *Breaker) Report(t Ticket, o Outcome, now time.Time) {
	b.mu.Lock()
	b.reportLocked(t, o, now)
	ev := b.takePending()
	b.mu.Unlock()
	b.emit(ev)
}

func (b *Breaker) reportLocked(t Ticket, o Outcome, now time.Time) {
	if t.gen != b.gen {
		return
	}
	if t.probe {
		// Only half-open hands out probe tickets, and a state change bumps
		// the generation: the breaker is half-open here.
		switch o {
		case Ignore:
			b.admitted--
		case Failure:
			b.trip("probe_failed", now)
		case Success:
			b.succeeded++
			if b.succeeded >= b.cfg.Probes {
				b.change(Closed, "probes_succeeded", now)
			}
		}
		return
	}
	if b.state != Closed || o == Ignore {
		return
	}
	b.window.add(now, o == Failure)
	if o == Success {
		b.consecutive = 0
		return
	}
	b.consecutive++
	if n := b.cfg.ConsecutiveFailures; n > 0 && b.consecutive >= n {
		b.trip("consecutive_failures", now)
		return
	}
	total, failed := b.window.sum(now)
	if total >= b.cfg.MinRequests && float64(failed) >= b.cfg.FailureRatio*float64(total) {
		b.trip("failure_ratio", now)
	}
}

// trip opens the breaker for the next open period.
func (b *Breaker) trip(reason string, now time.Time) {
	if b.trips > 0 && now.Sub(b.lastTrip) > b.cfg.OpenMax+b.openPeriod(b.trips) {
		b.trips = 0 // a long healthy spell since the last trip: start over
	}
	b.trips++
	b.lastTrip = now
	d := b.openPeriod(b.trips)
	if j := b.cfg.Jitter; j > 0 {
		d = time.Duration(float64(d) * (1 + j*(2*b.cfg.Rand()-1)))
	}
	b.until = now.Add(d)
	b.change(Open, reason, now)
}

// openPeriod is OpenBase × 2^(trips-1), capped at OpenMax, before jitter.
func (b *Breaker) openPeriod(trips int) time.Duration {
	d := float64(b.cfg.OpenBase) * math.Pow(2, float64(trips-1))
	if d > float64(b.cfg.OpenMax) {
		return b.cfg.OpenMax
	}
	return time.Duration(d)
}

func (b *Breaker) change(to State, reason string, now time.Time) {
	from := b.state
	b.state = to
	b.closed.Store(to == Closed)
	b.gen++
	b.admitted, b.succeeded = 0, 0
	if to == Closed {
		b.consecutive = 0
		b.window.reset()
	}
	c := Change{Name: b.name, From: from, To: to, Generation: b.gen, Trips: b.trips, Reason: reason, At: now}
	if to == Open {
		c.Until = b.until
	}
	b.pending = append(b.pending, c)
}

func (b *Breaker) takePending() []Change {
	if len(b.pending) == 0 {
		return nil
	}
	ev := b.pending
	b.pending = nil
	return ev
}

func (b *Breaker) emit(ev []Change) {
	if b.cfg.OnChange == nil {
		return
	}
	for _, c := range ev {
		b.cfg.OnChange(c)
	}
}

// Status returns the breaker's state at now (an open period that is over
// shows as half-open).
func (b *Breaker) Status(now time.Time) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Status{State: b.state, Generation: b.gen, Trips: b.trips, ConsecutiveFailures: b.consecutive}
	s.WindowRequests, s.WindowFailures = b.window.sum(now)
	switch b.state {
	case Open:
		if now.Before(b.until) {
			s.OpenUntil = b.until
		} else {
			s.State = HalfOpen
		}
	case HalfOpen:
		s.ProbesInFlight = b.admitted - b.succeeded
	}
	return s
}

// window counts requests and failures over a sliding window of
// windowBuckets slices.
type window struct {
	slice   time.Duration
	start   int64 // slice number of buckets[head]
	head    int
	total   [windowBuckets]int
	failed  [windowBuckets]int
	started bool
}

func (w *window) init(d time.Duration) {
	w.slice = d / windowBuckets
}

func (w *window) reset() {
	w.total, w.failed = [windowBuckets]int{}, [windowBuckets]int{}
	w.started = false
}

// advance moves the window so that its newest slice holds now.
func (w *window) advance(now time.Time) {
	n := now.UnixNano() / int64(w.slice)
	if !w.started {
		w.start, w.head, w.started = n, 0, true
		return
	}
	steps := n - w.start
	if steps <= 0 {
		return // same slice, or a clock step back: count it in the newest
	}
	if steps >= windowBuckets {
		w.total, w.failed = [windowBuckets]int{}, [windowBuckets]int{}
		w.start, w.head = n, 0
		return
	}
	for ; steps > 0; steps-- {
		w.head = (w.head + 1) % windowBuckets
		w.total[w.head], w.failed[w.head] = 0, 0
		w.start++
	}
}

func (w *window) add(now time.Time, failed bool) {
	w.advance(now)
	w.total[w.head]++
	if failed {
		w.failed[w.head]++
	}
}

func (w *window) sum(now time.Time) (total, failed int) {
	w.advance(now)
	for i := range windowBuckets {
		total += w.total[i]
		failed += w.failed[i]
	}
	return total, failed
}

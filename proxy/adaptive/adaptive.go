// Package adaptive is an adaptive concurrency limit for one pool: load
// shedding that answers early instead of letting queues, and latency, grow
// without bound when the pool is overloaded.
//
// The limit follows the gradient between the pool's best latency and its
// current one, in the spirit of Envoy's adaptive concurrency filter and
// Netflix's concurrency-limits: every interval,
//
//	gradient = clamp(tolerance × minLatency / latency, 0.5, 1.0)
//	limit    = limit × gradient + √limit
//
// where latency is the mean of the interval's samples. minLatency is
// measured apart, as Envoy does: at the start and then every
// MinLatencyInterval the limit drops to MinLimit until the requests in
// flight are down to it, the best of the next probeSamples samples is the
// new minLatency, and the limit goes back to what it was. (Under load every
// request waits in a queue, so the smallest sample of a busy spell is not the
// backend's speed, and a limit built on it drifts upwards.) While latency
// stays within tolerance × the best, the limit grows by √limit per interval;
// beyond, it shrinks in proportion, down to MinLimit. Requests above the
// limit are refused at once (the proxy answers 503 with Retry-After).
//
// Time comes from the caller, so tests drive it with a fake clock.
package adaptive

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config.
const (
	DefaultInitialLimit       = 50
	DefaultMinLimit           = 4
	DefaultMaxLimit           = 1000
	DefaultTolerance          = 2.0
	DefaultInterval           = 100 * time.Millisecond
	DefaultMinLatencyInterval = 30 * time.Second
	// minSamples is how many samples an interval needs to move the limit.
	minSamples = 4
	// probeSamples is how many samples at MinLimit measure minLatency.
	probeSamples = 20
)

// ErrConfig is returned, wrapped with the field and value, for a bad Config.
var ErrConfig = errors.New("invalid adaptive concurrency setting")

// Config tunes a Limiter. Zero fields take their defaults.
type Config struct {
	// InitialLimit is the limit before the first measurement. Default 50.
	InitialLimit int
	// MinLimit and MaxLimit bound the limit. Defaults 4 and 1000.
	MinLimit int
	MaxLimit int
	// Tolerance is how many times the best latency the mean may reach
	// before the limit shrinks, above 1. Default 2.
	Tolerance float64
	// Interval between updates of the limit. Default 100ms.
	Interval time.Duration
	// MinLatencyInterval is how often the best latency is measured afresh
	// (briefly at MinLimit). Default 30s.
	MinLatencyInterval time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.MinLimit == 0 {
		c.MinLimit = DefaultMinLimit
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = DefaultMaxLimit
	}
	if c.InitialLimit == 0 {
		c.InitialLimit = min(max(DefaultInitialLimit, c.MinLimit), c.MaxLimit)
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MinLatencyInterval == 0 {
		c.MinLatencyInterval = DefaultMinLatencyInterval
	}
	return c
}

// Validate checks a config with its defaults applied; field names are the
// proxy's YAML keys.
func (c Config) Validate() error {
	switch {
	case c.MinLimit < 1:
		return fmt.Errorf("%w: min_limit %d: allowed 1 or more", ErrConfig, c.MinLimit)
	case c.MaxLimit < c.MinLimit || c.MaxLimit > 1<<20:
		return fmt.Errorf("%w: max_limit %d: allowed min_limit (%d) to %d", ErrConfig, c.MaxLimit, c.MinLimit, 1<<20)
	case c.InitialLimit < c.MinLimit || c.InitialLimit > c.MaxLimit:
		return fmt.Errorf("%w: initial_limit %d: allowed min_limit (%d) to max_limit (%d)", ErrConfig, c.InitialLimit, c.MinLimit, c.MaxLimit)
	case !(c.Tolerance > 1 && c.Tolerance <= 100):
		return fmt.Errorf("%w: tolerance %v: allowed above 1 up to 100", ErrConfig, c.Tolerance)
	case c.Interval < time.Millisecond:
		return fmt.Errorf("%w: interval %v: allowed 1ms or more", ErrConfig, c.Interval)
	case c.MinLatencyInterval < 10*c.Interval:
		return fmt.Errorf("%w: min_latency_interval %v: allowed 10 × interval (%v) or more", ErrConfig, c.MinLatencyInterval, 10*c.Interval)
	}
	return nil
}

// Limiter is one pool's adaptive limit, safe for concurrent use.
type Limiter struct {
	cfg      Config
	limit    atomic.Int64
	inflight atomic.Int64

	mu      sync.Mutex
	started bool
	fLimit  float64
	next    time.Time // end of the current interval
	sum     time.Duration
	samples int
	best    time.Duration // minLatency
	mean    time.Duration // of the last interval

	probing   bool
	drained   bool // the requests in flight are down to MinLimit
	probeN    int
	probeMin  time.Duration
	saved     float64 // the limit to restore after the probe
	nextProbe time.Time
}

// New returns a limiter that starts by measuring minLatency.
func New(cfg Config) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Limiter{cfg: cfg, fLimit: float64(cfg.InitialLimit)}
	l.limit.Store(int64(cfg.InitialLimit))
	return l, nil
}

// Acquire takes a slot, and reports false (taking nothing) when the pool is
// at its limit. Every true is matched by one Release.
func (l *Limiter) Acquire() bool {
	if l.inflight.Add(1) > l.limit.Load() {
		l.inflight.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot. latency is the time to the response head;
// measured is false for an outcome that says nothing about the pool's speed
// (a connection failure, the client going away), which is not sampled.
func (l *Limiter) Release(latency time.Duration, measured bool, now time.Time) {
	left := l.inflight.Add(-1)
	if !measured || latency <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.started = true
		l.startProbe()
	}
	if l.probing {
		l.probe(latency, left, now)
		return
	}
	l.sum += latency
	l.samples++
	if !now.Before(l.nextProbe) {
		l.startProbe()
		return
	}
	if now.Before(l.next) || l.samples < minSamples {
		return
	}
	l.update()
	l.next = now.Add(l.cfg.Interval)
}

// startProbe drops the limit to MinLimit to measure minLatency; under l.mu.
func (l *Limiter) startProbe() {
	l.probing, l.drained, l.probeN, l.probeMin = true, false, 0, 0
	l.saved = l.fLimit
	l.limit.Store(int64(l.cfg.MinLimit))
}

// probe takes one sample while probing; left is the requests still in
// flight. Samples count once the requests in flight are down to MinLimit:
// the ones before waited behind the earlier load.
func (l *Limiter) probe(latency time.Duration, left int64, now time.Time) {
	if !l.drained {
		l.drained = left <= int64(l.cfg.MinLimit)
		return
	}
	l.probeN++
	if l.probeMin == 0 || latency < l.probeMin {
		l.probeMin = latency
	}
	if l.probeN < probeSamples {
		return
	}
	l.best = l.probeMin
	l.probing = false
	l.fLimit = l.saved
	l.limit.Store(int64(l.saved))
	l.sum, l.samples = 0, 0
	l.next = now.Add(l.cfg.Interval)
	l.nextProbe = now.Add(l.cfg.MinLatencyInterval)
}

// update moves the limit by the gradient of the interval's samples; under
// l.mu.
func (l *Limiter) update() {
	mean := l.sum / time.Duration(l.samples)
	l.sum, l.samples = 0, 0
	g := l.cfg.Tolerance * float64(l.best) / float64(mean)
	g = min(max(g, 0.5), 1.0)
	next := l.fLimit*g + math.Sqrt(l.fLimit)
	next = min(max(next, float64(l.cfg.MinLimit)), float64(l.cfg.MaxLimit))
	l.fLimit = next
	l.limit.Store(int64(next))
	l.mean = mean
}

// Limit returns the current limit, lock-free.
func (l *Limiter) Limit() int { return int(l.limit.Load()) }

// Status is a limiter's state, for display and metrics.
type Status struct {
	Limit    int
	InFlight int
	// Latency is the mean of the last interval; MinLatency the best of the
	// window it was compared with.
	Latency    time.Duration
	MinLatency time.Duration
	// Probing: the limit is at MinLimit while minLatency is measured.
	Probing bool
}

// Status returns the limiter's state.
func (l *Limiter) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Status{Limit: int(l.limit.Load()), InFlight: int(l.inflight.Load()), Latency: l.mean, MinLatency: l.best, Probing: l.probing}
}

package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Slow start: a backend that becomes usable (new, recovered, undrained) ramps
// from a small share of its weight to all of it over a window, so that it is
// not handed its full share of a busy pool in its first second.
//
// Every algorithm that uses weights or counts follows the ramp: the weighted
// ones (weighted_round_robin, random, consistent_hash's load bound) through
// the weight, scaled by the ramp; the ones whose share does not follow the
// weight when the backends are idle (round_robin, least_conn, p2c,
// least_time) also pass a ramping backend over with probability 1 − ramp, so
// that its share is at most the ramp's.

// weightScale is the fixed point of effective weights: a ramp at 1/1024 of
// a weight-1 backend still weighs 1.
const weightScale = 1024

// SlowStart is the ramp's shape for a pool.
type SlowStart struct {
	// Window is the ramp's length; 0: no slow start.
	Window time.Duration
	// MinShare is the share of its weight a backend starts with, above 0 up
	// to 1. Default 0.1.
	MinShare float64
}

// DefaultMinShare is SlowStart.MinShare's default.
const DefaultMinShare = 0.1

// Validate checks s (a zero MinShare means the default); field names are the
// config's.
func (s SlowStart) Validate() error {
	if s.Window < 0 || s.Window > time.Hour {
		return fmt.Errorf("%w: slow_start.window %v: allowed 0 (off) to 1h", ErrOption, s.Window)
	}
	if s.MinShare != 0 && !(s.MinShare > 0 && s.MinShare <= 1) {
		return fmt.Errorf("%w: slow_start.min_share %v: allowed above 0 up to 1", ErrOption, s.MinShare)
	}
	return nil
}

// StartRamp begins b's slow start at now; a zero window does nothing.
func (b *Backend) StartRamp(now time.Time, s SlowStart) {
	if s.Window <= 0 {
		return
	}
	m := s.MinShare
	if m == 0 {
		m = DefaultMinShare
	}
	b.rampEnd.Store(0)
	b.rampStart.Store(now.UnixNano())
	b.rampMin.Store(math.Float64bits(m))
	b.rampEnd.Store(now.Add(s.Window).UnixNano())
}

// StopRamp ends b's slow start: full weight at once.
func (b *Backend) StopRamp() {
	b.rampEnd.Store(0)
}

// Ramp returns the share of its weight b has at now: 1 outside slow start.
func (b *Backend) Ramp(now time.Time) float64 {
	return b.rampAt(now.UnixNano())
}

func (b *Backend) rampAt(now int64) float64 {
	end := b.rampEnd.Load()
	if end == 0 {
		return 1
	}
	if now >= end {
		b.rampEnd.CompareAndSwap(end, 0)
		return 1
	}
	start := b.rampStart.Load()
	m := math.Float64frombits(b.rampMin.Load())
	f := m
	if end > start && now > start {
		f = m + (1-m)*float64(now-start)/float64(end-start)
	}
	return min(max(f, m), 1)
}

// ramping reports whether b is in slow start, cheaply.
func (b *Backend) ramping() bool {
	return b.rampEnd.Load() != 0
}

// weight is the effective weight: the configured one in units of
// 1/weightScale, times the ramp.
func (b *Backend) weight() int64 {
	w := b.baseWeight() * weightScale
	if !b.ramping() {
		return w
	}
	return max(1, int64(float64(w)*b.rampAt(time.Now().UnixNano())))
}

func (b *Backend) baseWeight() int64 {
	if b.Weight <= 0 {
		return 1
	}
	return int64(b.Weight)
}

// passOver draws whether a ramping backend sits this pick out: with
// probability 1 − ramp. Always false outside slow start.
func (b *Backend) passOver() bool {
	if !b.ramping() {
		return false
	}
	return rand.Float64() >= b.rampAt(time.Now().UnixNano())
}

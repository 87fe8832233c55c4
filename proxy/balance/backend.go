// Package balance picks a backend of an L7 pool for each request.
//
// A pool is a list of *Backend, each carrying its own runtime accounting
// (requests in flight, moving average of latency) that the proxy updates with
// Acquire and Release around every proxied request. New builds a Picker for
// one of the algorithms from that list; Pick is allocation-free, safe for
// concurrent use and skips backends the caller declares unusable (unhealthy,
// draining, ejected).
//
// When the pool changes (reload, discovery), the caller builds a new Picker
// from the same *Backend values it kept for the surviving backends, so the
// accounting carries over; pickers hold no state that must survive a change
// except the smooth weighted round-robin positions, which restart.
package balance

import (
	"sync/atomic"
	"time"
)

// ewmaShift sets the weight of a new latency sample in the moving average:
// new = old + (sample - old) / 2^ewmaShift, i.e. 1/8.
const ewmaShift = 3

// Backend is one member of a pool. ID and Weight are set before the backend is
// handed to New and not changed afterwards; the accounting methods are safe for
// concurrent use.
type Backend struct {
	// ID is the backend's address, host:port; unique within a pool.
	ID string
	// Weight is the backend's share relative to the others; 0 means 1.
	Weight int

	inflight atomic.Int64
	ewma     atomic.Int64 // nanoseconds; 0 until the first sample
	requests atomic.Uint64
	failures atomic.Uint64

	// Slow start (slowstart.go): Unix nanoseconds; rampEnd 0 when off.
	rampStart atomic.Int64
	rampEnd   atomic.Int64
	rampMin   atomic.Uint64 // float64 bits
}

// NewBackend returns a backend with the given address and weight.
func NewBackend(id string, weight int) *Backend {
	return &Backend{ID: id, Weight: weight}
}

// Acquire records the start of a request sent to the backend. Every Acquire is
// matched by one Release.
func (b *Backend) Acquire() {
	b.inflight.Add(1)
}

// Release records the end of a request started with Acquire, its latency (time
// to the response headers, or to the failure) and whether it failed.
func (b *Backend) Release(latency time.Duration, failed bool) {
	b.inflight.Add(-1)
	b.requests.Add(1)
	if failed {
		b.failures.Add(1)
	}
	sample := int64(latency)
	if sample <= 0 {
		sample = 1
	}
	for {
		old := b.ewma.Load()
		next := sample
		if old != 0 {
			next = old + (sample-old)>>ewmaShift
			if next <= 0 {
				next = 1
			}
		}
		if b.ewma.CompareAndSwap(old, next) {
			return
		}
	}
}

// Abandon ends a request started with Acquire that says nothing about the
// backend (the client broke it off or sent a malformed body): it is no
// longer in flight, and neither its latency nor its outcome is recorded.
func (b *Backend) Abandon() {
	b.inflight.Add(-1)
}

// InFlight returns the number of requests started and not yet released.
func (b *Backend) InFlight() int64 {
	return b.inflight.Load()
}

// Latency returns the moving average of the released requests' latency, 0
// before the first one.
func (b *Backend) Latency() time.Duration {
	return time.Duration(b.ewma.Load())
}

// Requests returns how many requests were released, and how many of them
// failed.
func (b *Backend) Requests() (total, failed uint64) {
	return b.requests.Load(), b.failures.Load()
}

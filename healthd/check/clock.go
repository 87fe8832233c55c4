package check

import "time"

// Clock is the time source of a [Prober]: it decides when checks start and
// stamps results and events. Tests pass a fake (see package checktest);
// check timeouts and latencies always use real time, since they bound real
// I/O.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that is not armed.
	NewTimer() Timer
}

// Timer is a one-shot timer of a [Clock].
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// ResetAt arms the timer to fire once the clock reads at or later,
	// dropping any undelivered firing. An absolute time, so that a fake
	// clock moved between reading Now and arming cannot lose a firing.
	ResetAt(at time.Time)
	// Stop disarms the timer.
	Stop()
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a stopped timer backed by time.Timer.
func (SystemClock) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return systemTimer{t}
}

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time  { return s.t.C }
func (s systemTimer) ResetAt(at time.Time) { s.t.Reset(time.Until(at)) }
func (s systemTimer) Stop()                { s.t.Stop() }

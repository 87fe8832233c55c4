package check

import "time"

// Clock is the time source of a [Prober]: it decides when checks start and
// stamps results and events. Tests pass a fake (see package checktest);
// check timeouts and latencies always use real time, since they bound real
// I/O.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a [Clock].
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// Reset arms the timer to fire after d, dropping any undelivered
	// firing; d <= 0 fires at once.
	Reset(d time.Duration)
	// Stop disarms the timer.
	Stop()
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a timer backed by time.Timer.
func (SystemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time   { return s.t.C }
func (s systemTimer) Reset(d time.Duration) { s.t.Reset(d) }
func (s systemTimer) Stop()                 { s.t.Stop() }

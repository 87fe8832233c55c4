// Package checktest provides a fake [check.Clock] for tests of code that
// runs a check.Prober: time moves only when the test calls Advance.
package checktest

import (
	"sync"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
)

// Clock is a fake clock. The zero value is not usable; use NewClock.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*timer]struct{} // armed timers
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, timers: make(map[*timer]struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that is not armed.
func (c *Clock) NewTimer() check.Timer {
	return &timer{c: c, ch: make(chan time.Time, 1)}
}

// Advance moves the time forward by d and fires every timer that is due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			c.fire(t)
		}
	}
}

// Armed returns how many timers are waiting to fire.
func (c *Clock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// fire delivers the time on t's channel; the caller holds c.mu.
func (c *Clock) fire(t *timer) {
	delete(c.timers, t)
	select {
	case t.ch <- c.now:
	default:
	}
}

type timer struct {
	c  *Clock
	ch chan time.Time
	at time.Time
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) ResetAt(at time.Time) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	select { // drop an undelivered firing
	case <-t.ch:
	default:
	}
	t.at = at
	if !at.After(t.c.now) {
		t.c.fire(t)
		return
	}
	t.c.timers[t] = struct{}{}
}

func (t *timer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	delete(t.c.timers, t)
	select {
	case <-t.ch:
	default:
	}
}

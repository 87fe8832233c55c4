package checktest_test

import (
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check/checktest"
)

func TestClock(t *testing.T) {
	start := time.Unix(100, 0)
	c := checktest.NewClock(start)
	tm := c.NewTimer()
	if c.Armed() != 0 {
		t.Fatal("a new timer is armed")
	}
	fired := func() bool {
		select {
		case <-tm.C():
			return true
		default:
			return false
		}
	}
	tm.ResetAt(start.Add(time.Second))
	c.Advance(999 * time.Millisecond)
	if fired() {
		t.Fatal("fired early")
	}
	c.Advance(time.Millisecond)
	if !fired() || c.Armed() != 0 {
		t.Fatal("did not fire at its time")
	}
	tm.ResetAt(start) // in the past: fires at once
	if !fired() {
		t.Fatal("a past deadline did not fire")
	}
	tm.ResetAt(c.Now().Add(time.Second))
	tm.Stop()
	c.Advance(time.Hour)
	if fired() {
		t.Fatal("a stopped timer fired")
	}
	if got := c.Now(); !got.Equal(start.Add(time.Hour + time.Second)) {
		t.Fatalf("Now() = %v", got)
	}
}

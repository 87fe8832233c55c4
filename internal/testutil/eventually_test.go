package testutil

import (
	"runtime"
	"testing"
	"time"
)

func TestEventuallyWaitsForCondition(t *testing.T) {
	start := time.Now()
	took := Eventually(t, time.Second, "the deadline", func() bool { return time.Since(start) > 30*time.Millisecond })
	if took < 30*time.Millisecond {
		t.Fatalf("returned after %s, before the condition held", took)
	}
}

func TestEventuallyFailsAtTimeout(t *testing.T) {
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(ft, 30*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !ft.failed {
		t.Fatal("Eventually did not fail when the condition never held")
	}
}

// fakeTB records a Fatalf and ends the goroutine as the real one would.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

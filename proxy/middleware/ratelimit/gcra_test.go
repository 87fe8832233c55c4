package ratelimit

import (
	"testing"
	"time"
)

func TestGCRA(t *testing.T) {
	r := newRule("t", 10, time.Second, 5) // one per 100ms, 5 at once
	now := int64(time.Hour)
	var tat int64
	for i := range 5 {
		v, nt := r.take(tat, now)
		if !v.allowed || v.remaining != int64(4-i) {
			t.Fatalf("request %d of the burst: %+v", i, v)
		}
		tat = nt
	}
	v, nt := r.take(tat, now)
	if v.allowed || v.retry != 100*time.Millisecond || nt != tat {
		t.Fatalf("6th at once: %+v (tat moved %v), want denied, retry 100ms, tat unchanged", v, nt != tat)
	}
	if v.reset != 500*time.Millisecond {
		t.Errorf("reset %v, want 500ms", v.reset)
	}
	v, _ = r.take(tat, now+int64(100*time.Millisecond))
	if !v.allowed || v.remaining != 0 {
		t.Errorf("after 100ms: %+v, want one allowed", v)
	}
	// Idle for long: a full burst again, the same as a key never seen.
	v, _ = r.take(tat, now+int64(time.Minute))
	if !v.allowed || v.remaining != 4 {
		t.Errorf("after a minute: %+v", v)
	}
	if !tatExpired(tat, now+int64(time.Second)) {
		t.Error("TAT in the past not expired")
	}
}

func TestGCRASustainedRate(t *testing.T) {
	// Over 10 s of one request per ms, a 50/s limit with burst 20 admits
	// 50*10 + 20 at most.
	r := newRule("t", 50, time.Second, 20)
	var tat int64
	n := 0
	for ms := int64(1); ms <= 10_000; ms++ {
		v, nt := r.take(tat, ms*int64(time.Millisecond))
		tat = nt
		if v.allowed {
			n++
		}
	}
	if n > 520 || n < 500 {
		t.Errorf("admitted %d in 10s, want 500..520", n)
	}
}

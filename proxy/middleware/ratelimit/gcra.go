package ratelimit

import "time"

// rule is one rate: Rate requests per Per, with Burst requests allowed at
// once. It is applied as GCRA (the generic cell rate algorithm): the state
// of a key is one instant, its theoretical arrival time (TAT), so a bucket
// costs 8 bytes and a key whose TAT has passed is the same as a key never
// seen, which is what lets idle keys be dropped at any time.
type rule struct {
	name     string // policy name in the RateLimit fields and metrics
	rate     int64  // requests per per
	per      time.Duration
	burst    int64
	interval int64 // ns between two requests at the sustained rate
	tau      int64 // burst * interval: how far TAT may run ahead of now
}

func newRule(name string, rate int64, per time.Duration, burst int64) *rule {
	iv := int64(per) / rate
	if iv < 1 {
		iv = 1
	}
	return &rule{name: name, rate: rate, per: per, burst: burst, interval: iv, tau: iv * burst}
}

// verdict is the outcome of one decision.
type verdict struct {
	allowed   bool
	remaining int64         // requests still allowed at once after this one
	reset     time.Duration // until the bucket is full again
	retry     time.Duration // when denied: until one request is allowed
}

// take applies one request at now to the key whose TAT is tat and returns
// the verdict and the new TAT (unchanged when denied).
func (r *rule) take(tat, now int64) (verdict, int64) {
	if tat < now {
		tat = now
	}
	next := tat + r.interval
	if ahead := next - now; ahead > r.tau {
		return verdict{reset: time.Duration(tat - now), retry: time.Duration(ahead - r.tau)}, tat
	}
	return verdict{
		allowed:   true,
		remaining: (r.tau - (next - now)) / r.interval,
		reset:     time.Duration(next - now),
	}, next
}

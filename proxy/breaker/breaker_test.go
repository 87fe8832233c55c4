package breaker

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func newBreaker(t *testing.T, cfg Config) (*Breaker, *[]Change) {
	t.Helper()
	var mu sync.Mutex
	changes := &[]Change{}
	cfg.OnChange = func(c Change) { mu.Lock(); *changes = append(*changes, c); mu.Unlock() }
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 } // jitter factor 1
	}
	b, err := New("b", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, changes
}

func run(b *Breaker, o Outcome, n int, now time.Time) {
	for range n {
		tk, ok := b.Allow(now)
		if ok {
			b.Report(tk, o, now)
		}
	}
}

func TestConsecutiveFailuresTrip(t *testing.T) {
	b, ch := newBreaker(t, Config{ConsecutiveFailures: 3, MinRequests: 1000})
	run(b, Failure, 2, t0)
	run(b, Success, 1, t0) // resets the run
	run(b, Failure, 2, t0)
	if s := b.Status(t0); s.State != Closed || s.ConsecutiveFailures != 2 {
		t.Fatalf("after 2 failures in a row: %+v, want closed with 2", s)
	}
	run(b, Failure, 1, t0)
	if _, ok := b.Allow(t0); ok {
		t.Fatal("third failure in a row did not open the breaker")
	}
	if len(*ch) != 1 || (*ch)[0].To != Open || (*ch)[0].Reason != "consecutive_failures" || !(*ch)[0].Until.Equal(t0.Add(DefaultOpenBase)) {
		t.Fatalf("changes %+v", *ch)
	}
}

func TestFailureRatioNeedsMinRequests(t *testing.T) {
	b, _ := newBreaker(t, Config{ConsecutiveFailures: -1, MinRequests: 10, FailureRatio: 0.5, Window: 10 * time.Second})
	run(b, Failure, 9, t0)
	if b.Status(t0).State != Closed {
		t.Fatal("opened below min_requests")
	}
	run(b, Success, 10, t0) // 9/19 failed
	if b.Status(t0).State != Closed {
		t.Fatal("opened below the ratio")
	}
	run(b, Failure, 1, t0) // 10/20
	if b.Status(t0).State != Open {
		t.Fatal("did not open at the ratio")
	}
}

func TestWindowSlides(t *testing.T) {
	b, _ := newBreaker(t, Config{ConsecutiveFailures: -1, MinRequests: 4, FailureRatio: 0.5, Window: 10 * time.Second})
	run(b, Failure, 3, t0)
	run(b, Success, 5, t0.Add(5*time.Second))
	// 11s on, the failures have left the window: 1 failure in 6.
	run(b, Failure, 1, t0.Add(11*time.Second))
	if s := b.Status(t0.Add(11 * time.Second)); s.State != Closed || s.WindowRequests != 6 || s.WindowFailures != 1 {
		t.Fatalf("status %+v, want closed with 1 failure in 6", s)
	}
	// Another 5 s: only the last failure is left, below min_requests.
	if s := b.Status(t0.Add(16 * time.Second)); s.WindowRequests != 1 {
		t.Fatalf("status %+v, want 1 request in the window", s)
	}
}

// TestHalfOpenExactProbesConcurrent lets 200 goroutines ask at once, many
// rounds, and counts the admissions: exactly Probes each time.
func TestHalfOpenExactProbesConcurrent(t *testing.T) {
	for _, probes := range []int{1, 3, 7} {
		b, _ := newBreaker(t, Config{ConsecutiveFailures: 1, Probes: probes, OpenBase: time.Second, OpenMax: time.Second})
		now := t0
		for round := range 20 {
			if round == 0 {
				run(b, Failure, 1, now) // closed → open
			}
			now = now.Add(time.Second)
			var admitted atomic.Int64
			var tickets sync.Map
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if tk, ok := b.Allow(now); ok {
						admitted.Add(1)
						tickets.Store(g, tk)
					}
				}()
			}
			close(start)
			wg.Wait()
			if n := admitted.Load(); n != int64(probes) {
				t.Fatalf("probes %d round %d: %d admitted, want exactly %d", probes, round, n, probes)
			}
			// Fail one probe: reopened; the others' results are then stale.
			first := true
			tickets.Range(func(_, v any) bool {
				o := Success
				if first {
					o, first = Failure, false
				}
				b.Report(v.(Ticket), o, now)
				return true
			})
			if s := b.Status(now); s.State != Open {
				t.Fatalf("probes %d round %d: state %v after a failed probe, want open", probes, round, s.State)
			}
			// Half-open again; its first probe fails: open for the next round.
			now = now.Add(time.Second)
			tk, ok := b.Allow(now)
			if !ok {
				t.Fatal("half-open refused the first probe")
			}
			b.Report(tk, Failure, now)
		}
	}
}

func TestHalfOpenClosesWhenAllProbesSucceed(t *testing.T) {
	b, ch := newBreaker(t, Config{ConsecutiveFailures: 1, Probes: 3, OpenBase: time.Second})
	run(b, Failure, 1, t0)
	now := t0.Add(time.Second)
	var tks []Ticket
	for range 5 {
		if tk, ok := b.Allow(now); ok {
			tks = append(tks, tk)
		}
	}
	if len(tks) != 3 {
		t.Fatalf("%d probes admitted, want 3", len(tks))
	}
	b.Report(tks[0], Success, now)
	b.Report(tks[1], Success, now)
	if b.Status(now).State != HalfOpen {
		t.Fatal("closed before all probes succeeded")
	}
	if _, ok := b.Allow(now); ok {
		t.Fatal("a fourth probe was admitted")
	}
	b.Report(tks[2], Success, now)
	if b.Status(now).State != Closed {
		t.Fatal("did not close after 3 successful probes")
	}
	var reasons []string
	for _, c := range *ch {
		reasons = append(reasons, c.From.String()+">"+c.To.String()+":"+c.Reason)
	}
	want := []string{"closed>open:consecutive_failures", "open>half_open:open_period_over", "half_open>closed:probes_succeeded"}
	if len(reasons) != len(want) {
		t.Fatalf("changes %v, want %v", reasons, want)
	}
	for i := range want {
		if reasons[i] != want[i] {
			t.Fatalf("changes %v, want %v", reasons, want)
		}
	}
}

func TestIgnoredProbeFreesItsSlot(t *testing.T) {
	b, _ := newBreaker(t, Config{ConsecutiveFailures: 1, Probes: 1, OpenBase: time.Second})
	run(b, Failure, 1, t0)
	now := t0.Add(time.Second)
	tk, ok := b.Allow(now)
	if !ok {
		t.Fatal("no probe admitted")
	}
	if _, ok := b.Allow(now); ok {
		t.Fatal("second probe admitted")
	}
	b.Report(tk, Ignore, now) // e.g. the client went away
	if s := b.Status(now); s.State != HalfOpen {
		t.Fatalf("ignored probe changed the state to %v", s.State)
	}
	if _, ok := b.Allow(now); !ok {
		t.Fatal("the slot of an ignored probe was not freed")
	}
}

// TestStaleResultsIgnored: requests sent before a state change report after
// it, and change nothing.
func TestStaleResultsIgnored(t *testing.T) {
	b, _ := newBreaker(t, Config{ConsecutiveFailures: 2, OpenBase: time.Second})
	slow := make([]Ticket, 5)
	for i := range slow {
		slow[i], _ = b.Allow(t0)
	}
	run(b, Failure, 2, t0) // opens
	now := t0.Add(time.Second)
	probe, ok := b.Allow(now) // half-open
	if !ok {
		t.Fatal("no probe")
	}
	for _, tk := range slow {
		b.Report(tk, Success, now) // closed-era successes must not close it
	}
	if s := b.Status(now); s.State != HalfOpen {
		t.Fatalf("stale successes moved half-open to %v", s.State)
	}
	b.Report(probe, Success, now)
	if b.Status(now).State != Closed {
		t.Fatal("probe success did not close")
	}
	for _, tk := range slow {
		b.Report(tk, Failure, now) // nor may closed-era failures reopen it
	}
	if s := b.Status(now); s.State != Closed || s.ConsecutiveFailures != 0 {
		t.Fatalf("stale failures counted: %+v", s)
	}
	b.Report(probe, Failure, now) // a probe reporting twice: stale too
	if b.Status(now).State != Closed {
		t.Fatal("stale probe result reopened the breaker")
	}
}

func TestOpenPeriodGrowsAndCaps(t *testing.T) {
	b, ch := newBreaker(t, Config{ConsecutiveFailures: 1, OpenBase: time.Second, OpenMax: 5 * time.Second, Jitter: -1})
	now := t0
	run(b, Failure, 1, now)
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, d := range want {
		if i > 0 {
			run(b, Failure, 1, now) // the probe fails
		}
		last := (*ch)[len(*ch)-1]
		if last.To != Open || last.Until.Sub(now) != d {
			t.Fatalf("trip %d: open for %v, want %v", i+1, last.Until.Sub(now), d)
		}
		if _, ok := b.Allow(now.Add(d - 1)); ok {
			t.Fatalf("trip %d: admitted before the period ended", i+1)
		}
		now = now.Add(d)
	}
	// Probe succeeds; a long healthy spell later the next trip starts over.
	run(b, Success, 1, now)
	now = now.Add(time.Hour)
	run(b, Failure, 1, now)
	if last := (*ch)[len(*ch)-1]; last.Until.Sub(now) != time.Second {
		t.Fatalf("after a long closed spell: open for %v, want 1s", last.Until.Sub(now))
	}
}

func TestJitterBounds(t *testing.T) {
	for _, r := range []float64{0, 0.25, 0.5, 0.999} {
		b, ch := newBreaker(t, Config{ConsecutiveFailures: 1, OpenBase: 10 * time.Second, Jitter: 0.2, Rand: func() float64 { return r }})
		run(b, Failure, 1, t0)
		got := (*ch)[0].Until.Sub(t0)
		want := time.Duration(float64(10*time.Second) * (1 + 0.2*(2*r-1)))
		if got != want || got < 8*time.Second || got > 12*time.Second {
			t.Fatalf("rand %v: open %v, want %v within 8s-12s", r, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{FailureRatio: 1.5}, "failure_ratio 1.5"},
		{Config{MinRequests: -1}, "min_requests -1"},
		{Config{Window: time.Millisecond}, "window 1ms"},
		{Config{ConsecutiveFailures: -2}, "consecutive_failures -2"},
		{Config{OpenBase: 10 * time.Second, OpenMax: time.Second}, "open_max 1s"},
		{Config{Jitter: 2}, "jitter 2"},
		{Config{Probes: -3}, "probes -3"},
	} {
		_, err := New("x", c.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want one naming %q", c.cfg, err, c.want)
		}
	}
}

package adaptive

import (
	"container/heap"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

// times is a min-heap of instants.
type times []time.Time

func (h times) Len() int           { return len(h) }
func (h times) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h times) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *times) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *times) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

type completion struct {
	at      time.Time
	latency time.Duration
}

type completions []completion

func (h completions) Len() int           { return len(h) }
func (h completions) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h completions) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *completions) Push(x any)        { *h = append(*h, x.(completion)) }
func (h *completions) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

type simResult struct {
	p99       time.Duration
	admitted  int
	refused   int
	goodput   float64 // admitted per second, after warm-up
	lastLimit int
}

// simulate offers a backend of `workers` workers with a fixed service time
// and a FIFO queue `overload` times its capacity, open loop, for `length`
// of fake time; l nil: no limit.
func simulate(l *Limiter, workers int, service time.Duration, overload float64, length time.Duration) simResult {
	free := make(times, workers)
	for i := range free {
		free[i] = t0
	}
	heap.Init(&free)
	var done completions
	gap := time.Duration(float64(service) / (overload * float64(workers)))
	warm := t0.Add(length / 4)
	var lat []time.Duration
	var r simResult
	for now := t0; now.Before(t0.Add(length)); now = now.Add(gap) {
		for len(done) > 0 && !done[0].at.After(now) {
			c := heap.Pop(&done).(completion)
			if l != nil {
				l.Release(c.latency, true, c.at)
			}
		}
		if l != nil && !l.Acquire() {
			if now.After(warm) {
				r.refused++
			}
			continue
		}
		start := heap.Pop(&free).(time.Time)
		if start.Before(now) {
			start = now
		}
		finish := start.Add(service)
		heap.Push(&free, finish)
		heap.Push(&done, completion{finish, finish.Sub(now)})
		if now.After(warm) {
			lat = append(lat, finish.Sub(now))
			r.admitted++
		}
	}
	slices.Sort(lat)
	r.p99 = lat[len(lat)*99/100]
	r.goodput = float64(r.admitted) / (length - length/4).Seconds()
	if l != nil {
		r.lastLimit = l.Status().Limit
	}
	return r
}

// TestOverloadBoundsLatency: at 2× a backend's capacity the limit keeps the
// p99 latency within a few service times and the backend busy, where without
// it the queue, and latency, grow for as long as the overload lasts.
func TestOverloadBoundsLatency(t *testing.T) {
	const workers, service = 10, 10 * time.Millisecond
	capacity := float64(workers) / service.Seconds()

	open := simulate(nil, workers, service, 2, time.Minute)
	if open.p99 < 100*service {
		t.Fatalf("without a limit p99 %v: the simulation does not overload the backend", open.p99)
	}
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := simulate(l, workers, service, 2, time.Minute)
	t.Logf("limit %d, p99 %v (without limit %v), goodput %.0f/s of %.0f, refused %d", r.lastLimit, r.p99, open.p99, r.goodput, capacity, r.refused)
	if r.p99 > 3*service {
		t.Errorf("p99 %v at 2× overload, want at most %v (tolerance 2 × best)", r.p99, 3*service)
	}
	if r.goodput < 0.9*capacity {
		t.Errorf("goodput %.0f/s, want at least 90%% of capacity %.0f/s", r.goodput, capacity)
	}
	if r.refused == 0 {
		t.Error("nothing refused at 2× overload")
	}
}

// TestUnderloadAdmitsAll: below capacity the limit grows out of the way.
func TestUnderloadAdmitsAll(t *testing.T) {
	l, err := New(Config{InitialLimit: 5, MinLimit: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := simulate(l, 10, 10*time.Millisecond, 0.5, 30*time.Second)
	if r.refused != 0 {
		t.Fatalf("refused %d at half capacity (limit %d)", r.refused, r.lastLimit)
	}
}

func TestAcquireExact(t *testing.T) {
	l, _ := New(Config{InitialLimit: 5, MinLimit: 1})
	n := 0
	for range 100 {
		if l.Acquire() {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d admitted at limit 5", n)
	}
	l.Release(time.Millisecond, false, t0)
	if !l.Acquire() || l.Acquire() {
		t.Fatal("a released slot was not exactly one")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{MinLimit: -1}, "min_limit -1"},
		{Config{MinLimit: 10, MaxLimit: 5}, "max_limit 5"},
		{Config{InitialLimit: 5000}, "initial_limit 5000"},
		{Config{Tolerance: 0.5}, "tolerance 0.5"},
		{Config{Interval: time.Microsecond}, "interval 1µs"},
		{Config{Interval: time.Second, MinLatencyInterval: time.Second}, "min_latency_interval 1s"},
	} {
		if _, err := New(c.cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.cfg, err, c.want)
		}
	}
}

package outlier

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, e := range r.events {
		parts = append(parts, fmt.Sprintf("%s:%s", e.Kind, e.Backend))
	}
	return strings.Join(parts, " ")
}

func newDetector(t *testing.T, cfg Config, ids ...string) (*Detector, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg.OnEvent = rec.add
	d, err := New(cfg, ids)
	if err != nil {
		t.Fatal(err)
	}
	return d, rec
}

func fail(d *Detector, id string, n int, now time.Time) {
	for range n {
		d.Report(id, true, now)
	}
}

func TestThreshold(t *testing.T) {
	d, rec := newDetector(t, Config{ConsecutiveFailures: 3}, "a", "b")
	fail(d, "a", 2, t0)
	d.Report("a", false, t0) // a success resets the run
	fail(d, "a", 2, t0)
	if d.Ejected("a", t0) {
		t.Fatal("ejected after 2 consecutive failures, threshold 3")
	}
	d.Report("a", true, t0)
	if !d.Ejected("a", t0) {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	if d.Ejected("b", t0) || d.Ejected("unknown", t0) {
		t.Error("other backends ejected")
	}
	if got := rec.kinds(); got != "ejected:a" {
		t.Errorf("events %q", got)
	}
}

// TestGrowth ejects one backend again and again: base × n, capped at max;
// failures of requests that were in flight during an ejection do not count.
func TestGrowth(t *testing.T) {
	base, maxE := 10*time.Second, 35*time.Second
	d, rec := newDetector(t, Config{ConsecutiveFailures: 2, BaseEjection: base, MaxEjection: maxE}, "a", "b")
	now := t0
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 35 * time.Second, 35 * time.Second} {
		fail(d, "a", 2, now)
		fail(d, "a", 5, now.Add(time.Second)) // in flight while ejected: ignored
		if !d.Ejected("a", now.Add(want-time.Nanosecond)) {
			t.Fatalf("ejection %d: back before %v", i+1, want)
		}
		if d.Ejected("a", now.Add(want)) {
			t.Fatalf("ejection %d: still ejected after %v", i+1, want)
		}
		now = now.Add(want) // fails again as soon as it is back
	}
	if got, want := rec.kinds(), strings.TrimSpace(strings.Repeat("ejected:a returned:a ", 5)); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	rec.mu.Lock()
	last := rec.events[len(rec.events)-2]
	rec.mu.Unlock()
	if last.Ejections != 5 {
		t.Errorf("fifth ejection counted %d", last.Ejections)
	}
}

// TestDecay: time in service after an ejection lowers the next one's length.
func TestDecay(t *testing.T) {
	base := 10 * time.Second
	d, _ := newDetector(t, Config{ConsecutiveFailures: 1, BaseEjection: base, MaxEjection: time.Hour}, "a", "b")
	now := t0
	for range 3 {
		fail(d, "a", 1, now)
		now = now.Add(time.Hour)
		d.Ejected("a", now)
	}
	// Three ejections, then an hour in service each time: the count decayed
	// to zero every time, so the next ejection is base again.
	fail(d, "a", 1, now)
	if !d.Ejected("a", now.Add(base-1)) || d.Ejected("a", now.Add(base)) {
		t.Fatalf("after long good periods the ejection is not base long")
	}
	// Fail right after coming back: 2 × base; then 15s in service (one
	// decay step) and fail: 2 × base again, not 3 ×.
	now = now.Add(base)
	fail(d, "a", 1, now)
	if !d.Ejected("a", now.Add(2*base-1)) || d.Ejected("a", now.Add(2*base)) {
		t.Fatalf("second ejection in a row is not 2 × base")
	}
	now = now.Add(2*base + 15*time.Second)
	fail(d, "a", 1, now)
	if !d.Ejected("a", now.Add(2*base-1)) || d.Ejected("a", now.Add(2*base)) {
		t.Fatalf("after one decay step the ejection is not 2 × base")
	}
}

func TestMaxShare(t *testing.T) {
	tests := []struct {
		name    string
		percent int
		pool    int
		want    int // most ejected at once
	}{
		{"half of 4", 50, 4, 2},
		{"half of 5", 50, 5, 2},
		{"10% of 2 still allows one", 10, 2, 1},
		{"100% of 3", 100, 3, 3},
		{"never the only backend", 50, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ids []string
			for i := range tt.pool {
				ids = append(ids, fmt.Sprintf("b%d", i))
			}
			d, rec := newDetector(t, Config{ConsecutiveFailures: 1, BaseEjection: time.Minute, MaxEjectedPercent: tt.percent}, ids...)
			for _, id := range ids {
				fail(d, id, 1, t0)
			}
			ejected := 0
			for _, id := range ids {
				if d.Ejected(id, t0) {
					ejected++
				}
			}
			if ejected != tt.want {
				t.Errorf("%d ejected, want %d", ejected, tt.want)
			}
			if refused := strings.Count(rec.kinds(), "refused:"); refused != tt.pool-tt.want {
				t.Errorf("%d refusals, want %d", refused, tt.pool-tt.want)
			}
		})
	}
}

// TestMaxShareMakesRoom: a refused backend is ejected on its next failure
// once another backend is back.
func TestMaxShareMakesRoom(t *testing.T) {
	d, rec := newDetector(t, Config{ConsecutiveFailures: 2, BaseEjection: time.Minute, MaxEjectedPercent: 50}, "a", "b")
	fail(d, "a", 2, t0)
	fail(d, "b", 2, t0)
	if !d.Ejected("a", t0) || d.Ejected("b", t0) {
		t.Fatal("want a ejected, b refused")
	}
	later := t0.Add(time.Minute)
	fail(d, "b", 1, later) // still over the threshold: one more failure suffices
	if !d.Ejected("b", later) || d.Ejected("a", later) {
		t.Errorf("after a's return: a ejected %v, b ejected %v; want b only", d.Ejected("a", later), d.Ejected("b", later))
	}
	if got := rec.kinds(); got != "ejected:a refused:b returned:a ejected:b" {
		t.Errorf("events %q", got)
	}
}

func TestSetBackends(t *testing.T) {
	d, _ := newDetector(t, Config{ConsecutiveFailures: 1, MaxEjectedPercent: 100}, "a", "b")
	fail(d, "a", 1, t0)
	d.SetBackends([]string{"a", "c"})
	if !d.Ejected("a", t0) {
		t.Error("a kept in the pool lost its ejection")
	}
	fail(d, "b", 1, t0)
	if d.Ejected("b", t0) {
		t.Error("removed backend b is tracked")
	}
	fail(d, "c", 1, t0)
	if !d.Ejected("c", t0) {
		t.Error("new backend c is not tracked")
	}
	st := d.Statuses(t0)
	if len(st) != 2 {
		t.Fatalf("statuses %+v", st)
	}
	for _, s := range st {
		if !s.EjectedUntil.Equal(t0.Add(DefaultBaseEjection)) || s.Ejections != 1 {
			t.Errorf("status %+v", s)
		}
	}
}

func TestConfigRejects(t *testing.T) {
	tests := []struct {
		cfg Config
		msg string
	}{
		{Config{ConsecutiveFailures: -1}, "consecutive_failures -1"},
		{Config{BaseEjection: time.Microsecond}, "base_ejection 1µs"},
		{Config{BaseEjection: time.Minute, MaxEjection: time.Second}, "max_ejection 1s: want at least base_ejection (1m0s)"},
		{Config{MaxEjectedPercent: 101}, "max_ejected_percent 101: allowed 0 to 100"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg, nil)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%+v): %v, want %q", tt.cfg, err, tt.msg)
		}
	}
}

func TestConcurrent(t *testing.T) {
	ids := []string{"a", "b", "c", "d"}
	d, _ := newDetector(t, Config{ConsecutiveFailures: 3, BaseEjection: time.Millisecond, MaxEjection: 10 * time.Millisecond}, ids...)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
				id := ids[(g+i)%len(ids)]
				d.Report(id, i%3 != 0, now)
				d.Ejected(id, now)
				if i%1000 == 0 {
					d.SetBackends(ids)
					d.Statuses(now)
				}
			}
		}()
	}
	wg.Wait()
	// The limit holds at any time after the reports that ejected: at
	// 499 ms a goroutine that ran ahead could already have ejected at
	// 499.9 ms, when an earlier ejection had ended, and this would count
	// both.
	ejected := 0
	for _, s := range d.Statuses(t0.Add(5000 * 100 * time.Microsecond)) {
		if !s.EjectedUntil.IsZero() {
			ejected++
		}
	}
	if ejected > 2 {
		t.Errorf("%d of 4 ejected at once, limit 50%%", ejected)
	}
}

func BenchmarkEjected(b *testing.B) {
	d, _ := New(Config{}, []string{"a", "b", "c"})
	b.ReportAllocs()
	for b.Loop() {
		d.Ejected("b", t0)
	}
}

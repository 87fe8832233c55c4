package balance

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func pool(weights ...int) []*Backend {
	list := make([]*Backend, len(weights))
	for i, w := range weights {
		list[i] = NewBackend(fmt.Sprintf("10.0.0.%d:80", i+1), w)
	}
	return list
}

func mustNew(t testing.TB, alg Algorithm, list []*Backend, opts Options) Picker {
	t.Helper()
	p, err := New(alg, list, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", alg, err)
	}
	return p
}

// counts picks n times, releasing each request at once, and returns the
// share of picks per backend index.
func counts(t *testing.T, p Picker, list []*Backend, n int) []int {
	t.Helper()
	idx := make(map[*Backend]int, len(list))
	for i, b := range list {
		idx[b] = i
	}
	got := make([]int, len(list))
	for k := 0; k < n; k++ {
		b := p.Pick(uint64(k)*0x9e3779b97f4a7c15, nil)
		if b == nil {
			t.Fatalf("pick %d: nil", k)
		}
		b.Acquire()
		b.Release(time.Millisecond, false)
		got[idx[b]]++
	}
	return got
}

func TestDistribution(t *testing.T) {
	const n = 60000
	tests := []struct {
		alg     Algorithm
		weights []int
		want    []float64 // expected share per backend
		tol     float64   // allowed absolute deviation of a share
	}{
		{RoundRobin, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.0001},
		{RoundRobin, []int{5, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.0001}, // ignores weights
		{WeightedRoundRobin, []int{5, 1, 1}, []float64{5. / 7, 1. / 7, 1. / 7}, 0.0001},
		{WeightedRoundRobin, []int{3, 2, 0}, []float64{3. / 6, 2. / 6, 1. / 6}, 0.0001}, // 0 means 1
		{Random, []int{1, 1, 1, 1}, []float64{.25, .25, .25, .25}, 0.02},
		{Random, []int{3, 1}, []float64{.75, .25}, 0.02},
		{LeastConn, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.0001}, // all idle: ties rotate
		{P2C, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.02},
		{LeastTime, []int{1, 1}, []float64{.5, .5}, 0.0001}, // equal latency: ties rotate
		{ConsistentHash, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.02},
		{ConsistentHash, []int{2, 1, 1}, []float64{.5, .25, .25}, 0.02},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.alg, tt.weights), func(t *testing.T) {
			list := pool(tt.weights...)
			got := counts(t, mustNew(t, tt.alg, list, Options{}), list, n)
			for i, c := range got {
				share := float64(c) / n
				if math.Abs(share-tt.want[i]) > tt.tol {
					t.Errorf("backend %d: share %.4f, want %.4f ± %.4f (counts %v)", i, share, tt.want[i], tt.tol, got)
				}
			}
		})
	}
}

// TestSmoothWeighted checks the exact order of smooth weighted round-robin:
// the heavy backend's picks are spread over the cycle, never in one burst.
func TestSmoothWeighted(t *testing.T) {
	tests := []struct {
		weights []int
		want    string
	}{
		{[]int{5, 1, 1}, "aabacaa"},
		{[]int{1, 1, 1}, "abc"},
		{[]int{3, 1}, "aaba"},
		{[]int{2, 3}, "babab"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			list := pool(tt.weights...)
			p := mustNew(t, WeightedRoundRobin, list, Options{})
			var seq strings.Builder
			for range 3 * len(tt.want) {
				b := p.Pick(0, nil)
				for i := range list {
					if list[i] == b {
						seq.WriteByte(byte('a' + i))
					}
				}
			}
			if got, want := seq.String(), strings.Repeat(tt.want, 3); got != want {
				t.Errorf("order %q, want %q", got, want)
			}
		})
	}
}

// TestSmoothWeightedNoBurst checks skewed pools: at every point of three
// cycles, each backend's count of picks stays within one of its exact share
// (t × w / Σw). A plain weighted round-robin that sends the heavy backend its
// whole weight in one burst is 2.3 picks ahead at t = 10 for weights 10,1,1,1.
func TestSmoothWeightedNoBurst(t *testing.T) {
	for _, weights := range [][]int{{10, 1, 1, 1}, {20, 1}, {5, 3, 2}, {7, 7, 1}, {100, 1, 1}} {
		list := pool(weights...)
		p := mustNew(t, WeightedRoundRobin, list, Options{})
		var sum int
		for _, w := range weights {
			sum += w
		}
		got := make([]int, len(list))
		for step := 1; step <= 3*sum; step++ {
			b := p.Pick(0, nil)
			for i := range list {
				if list[i] == b {
					got[i]++
				}
			}
			for i, w := range weights {
				if dev := math.Abs(float64(got[i]) - float64(step*w)/float64(sum)); dev >= 1 {
					t.Fatalf("weights %v, pick %d: backend %d has %d picks, exact share %.2f", weights, step, i, got[i], float64(step*w)/float64(sum))
				}
			}
		}
	}
}

func TestSkipsUnusable(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			list := pool(1, 1, 1, 1)
			p := mustNew(t, alg, list, Options{})
			down := map[*Backend]bool{list[0]: true, list[2]: true}
			usable := func(b *Backend) bool { return !down[b] }
			seen := map[*Backend]int{}
			for k := range 2000 {
				b := p.Pick(uint64(k)*0x9e3779b97f4a7c15, usable)
				if b == nil || down[b] {
					t.Fatalf("pick %d: got %v, want a usable backend", k, b)
				}
				seen[b]++
			}
			if len(seen) != 2 {
				t.Errorf("picked %d distinct backends, want both usable ones", len(seen))
			}
			if b := p.Pick(1, func(*Backend) bool { return false }); b != nil {
				t.Errorf("none usable: got %s, want nil", b.ID)
			}
			empty := mustNew(t, alg, nil, Options{})
			if b := empty.Pick(1, nil); b != nil {
				t.Errorf("empty pool: got %s, want nil", b.ID)
			}
		})
	}
}

// TestFairWithUnusable: with one backend of four unusable, the other three
// share evenly; the one after the unusable backend gets no extra share.
func TestFairWithUnusable(t *testing.T) {
	for _, alg := range []Algorithm{RoundRobin, LeastConn, LeastTime, WeightedRoundRobin} {
		t.Run(string(alg), func(t *testing.T) {
			list := pool(1, 1, 1, 1)
			p := mustNew(t, alg, list, Options{})
			usable := func(b *Backend) bool { return b != list[1] }
			got := map[*Backend]int{}
			for range 3000 {
				b := p.Pick(0, usable)
				b.Acquire()
				b.Release(time.Millisecond, false)
				got[b]++
			}
			for i, b := range list {
				want := 1000
				if i == 1 {
					want = 0
				}
				if got[b] != want {
					t.Errorf("backend %d: %d picks, want %d", i, got[b], want)
				}
			}
		})
	}
}

func TestLeastConn(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		inflight []int
		want     int
	}{
		{"fewest", []int{1, 1, 1}, []int{5, 1, 3}, 1},
		{"weighted: 4 on weight 4 beats 2 on weight 1", []int{4, 1}, []int{4, 2}, 0},
		{"weighted: 9 on weight 4 loses to 2 on weight 1", []int{4, 1}, []int{9, 2}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := pool(tt.weights...)
			for i, n := range tt.inflight {
				for range n {
					list[i].Acquire()
				}
			}
			p := mustNew(t, LeastConn, list, Options{})
			for range 10 {
				if got := p.Pick(0, nil); got != list[tt.want] {
					t.Fatalf("picked %s, want %s", got.ID, list[tt.want].ID)
				}
			}
		})
	}
}

// TestLeastConnSpreads holds every request open: the in-flight counts stay
// level across the backends, in proportion to the weights.
func TestLeastConnSpreads(t *testing.T) {
	list := pool(1, 2, 1)
	p := mustNew(t, LeastConn, list, Options{})
	for range 400 {
		p.Pick(0, nil).Acquire()
	}
	if a, b, c := list[0].InFlight(), list[1].InFlight(), list[2].InFlight(); a != 100 || b != 200 || c != 100 {
		t.Errorf("in flight %d/%d/%d, want 100/200/100", a, b, c)
	}
}

func TestP2C(t *testing.T) {
	// The busiest backend is never the lighter of a pair, so it is never
	// picked; the idle one wins every pair it is drawn in.
	list := pool(1, 1, 1)
	for range 10 {
		list[0].Acquire()
	}
	for range 5 {
		list[2].Acquire()
	}
	p := mustNew(t, P2C, list, Options{})
	got := map[*Backend]int{}
	for range 3000 {
		got[p.Pick(0, nil)]++
	}
	if got[list[0]] != 0 {
		t.Errorf("busiest backend picked %d times, want 0", got[list[0]])
	}
	// The idle backend is in 2 of 3 pairs.
	if share := float64(got[list[1]]) / 3000; share < 0.6 || share > 0.74 {
		t.Errorf("idle backend share %.3f, want about 2/3", share)
	}
	two := pool(1, 1)
	two[0].Acquire()
	p = mustNew(t, P2C, two, Options{})
	for range 100 {
		if b := p.Pick(0, nil); b != two[1] {
			t.Fatalf("two backends: picked the busy one")
		}
	}
}

func TestLeastTime(t *testing.T) {
	list := pool(1, 1)
	slow, fast := list[0], list[1]
	for range 20 {
		slow.Acquire()
		slow.Release(9500*time.Microsecond, false)
		fast.Acquire()
		fast.Release(time.Millisecond, false)
	}
	if got := fast.Latency(); got != time.Millisecond {
		t.Fatalf("fast latency %v, want 1ms", got)
	}
	p := mustNew(t, LeastTime, list, Options{})
	if b := p.Pick(0, nil); b != fast {
		t.Fatalf("idle: picked %s, want the fast backend", b.ID)
	}
	// Requests held open on the fast backend raise its score: latency ×
	// (in flight + 1). At 9 in flight, 1ms × 10 > 9.5ms × 1.
	var n int
	for ; n < 100; n++ {
		b := p.Pick(0, nil)
		if b == slow {
			break
		}
		b.Acquire()
	}
	if n != 9 {
		t.Errorf("the slow backend got its first request after %d on the fast one, want 9", n)
	}
}

// TestLeastTimeSimulation sends requests to two backends whose latency
// differs tenfold; each request is held for its latency on a simulated clock.
// The fast backend takes most of the requests.
func TestLeastTimeSimulation(t *testing.T) {
	list := pool(1, 1)
	latency := map[*Backend]time.Duration{list[0]: 10 * time.Millisecond, list[1]: time.Millisecond}
	p := mustNew(t, LeastTime, list, Options{})
	type req struct {
		b   *Backend
		end time.Duration
	}
	var open []req
	got := map[*Backend]int{}
	for now := time.Duration(0); now < time.Second; now += 250 * time.Microsecond {
		kept := open[:0]
		for _, r := range open {
			if r.end <= now {
				r.b.Release(latency[r.b], false)
			} else {
				kept = append(kept, r)
			}
		}
		open = kept
		b := p.Pick(0, nil)
		b.Acquire()
		got[b]++
		open = append(open, req{b, now + latency[b]})
	}
	if fast, slow := got[list[1]], got[list[0]]; fast < 4*slow {
		t.Errorf("fast backend %d requests, slow %d: want the fast one to take at least 4×", fast, slow)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		alg  Algorithm
		list []*Backend
		opts Options
		err  error
		msg  string
	}{
		{"unknown algorithm", "fastest", pool(1), Options{}, ErrAlgorithm, `algorithm "fastest": allowed round_robin`},
		{"empty id", RoundRobin, []*Backend{{}}, Options{}, ErrBackend, "backends[0].id is empty"},
		{"duplicate", RoundRobin, []*Backend{NewBackend("a:1", 1), NewBackend("a:1", 1)}, Options{}, ErrBackend, `"a:1" appears twice`},
		{"negative weight", RoundRobin, []*Backend{NewBackend("a:1", -1)}, Options{}, ErrBackend, "weight -1: allowed 0"},
		{"huge weight", RoundRobin, []*Backend{NewBackend("a:1", MaxWeight+1)}, Options{}, ErrBackend, "weight 1048577"},
		{"load factor", ConsistentHash, pool(1), Options{LoadFactor: 0.5}, ErrOption, "load_factor 0.5: allowed 1 or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.alg, tt.list, tt.opts)
			if !errors.Is(err, tt.err) || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Errorf("error %v, want %v containing %q", err, tt.err, tt.msg)
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, a := range Algorithms {
		if got, err := ParseAlgorithm(string(a)); err != nil || got != a {
			t.Errorf("ParseAlgorithm(%q) = %q, %v", a, got, err)
		}
	}
	if got, err := ParseAlgorithm(""); err != nil || got != RoundRobin {
		t.Errorf(`ParseAlgorithm("") = %q, %v; want round_robin`, got, err)
	}
	if _, err := ParseAlgorithm("roundrobin"); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("ParseAlgorithm(roundrobin): %v, want ErrAlgorithm", err)
	}
}

func TestBackendAccounting(t *testing.T) {
	b := NewBackend("a:1", 1)
	b.Acquire()
	b.Acquire()
	b.Release(8*time.Millisecond, false)
	if b.InFlight() != 1 || b.Latency() != 8*time.Millisecond {
		t.Fatalf("after first release: in flight %d latency %v", b.InFlight(), b.Latency())
	}
	b.Release(16*time.Millisecond, true)
	// 8ms + (16ms - 8ms)/8 = 9ms
	if b.InFlight() != 0 || b.Latency() != 9*time.Millisecond {
		t.Errorf("after second release: in flight %d latency %v, want 0 and 9ms", b.InFlight(), b.Latency())
	}
	if total, failed := b.Requests(); total != 2 || failed != 1 {
		t.Errorf("requests %d failed %d, want 2 and 1", total, failed)
	}
}

// TestConcurrent runs every algorithm from many goroutines (for the race
// detector) and checks that the accounting balances out.
func TestConcurrent(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			list := pool(1, 2, 3, 1)
			p := mustNew(t, alg, list, Options{})
			usable := func(b *Backend) bool { return b != list[3] }
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range 2000 {
						b := p.Pick(uint64(g*2000+k)*0x9e3779b97f4a7c15, usable)
						if b == nil || b == list[3] {
							t.Errorf("picked %v", b)
							return
						}
						b.Acquire()
						b.Release(time.Duration(k%7)*time.Millisecond, k%5 == 0)
					}
				}()
			}
			wg.Wait()
			var total uint64
			for _, b := range list {
				if b.InFlight() != 0 {
					t.Errorf("%s: in flight %d after all released", b.ID, b.InFlight())
				}
				n, _ := b.Requests()
				total += n
			}
			if total != 16000 {
				t.Errorf("released %d requests, want 16000", total)
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			list := pool(1, 2, 3, 1, 1, 1, 1, 1)
			p := mustNew(t, alg, list, Options{})
			usable := func(b *Backend) bool { return b != list[2] }
			k := uint64(0)
			allocs := testing.AllocsPerRun(1000, func() {
				k += 0x9e3779b97f4a7c15
				p.Pick(k, usable)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per pick, want 0", allocs)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, alg := range Algorithms {
		b.Run(string(alg), func(b *testing.B) {
			list := pool(1, 2, 3, 1, 1, 1, 1, 1)
			p := mustNew(b, alg, list, Options{})
			usable := func(bk *Backend) bool { return bk != list[2] }
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				k := uint64(0)
				for pb.Next() {
					k += 0x9e3779b97f4a7c15
					bk := p.Pick(k, usable)
					bk.Acquire()
					bk.Release(time.Millisecond, false)
				}
			})
		})
	}
}

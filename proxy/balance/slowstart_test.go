package balance

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSlowStartShareFollowsRamp places one of four equal backends at points
// along its ramp and checks its share of sequential picks: ramp/(3+ramp) for
// every algorithm whose idle share follows the weight, at most that for
// least_time (which sends idle traffic to the best score).
func TestSlowStartShareFollowsRamp(t *testing.T) {
	const window = 100 * time.Second
	for _, alg := range []Algorithm{RoundRobin, WeightedRoundRobin, LeastConn, P2C, Random, LeastTime} {
		for _, elapsed := range []time.Duration{0, 25 * time.Second, 50 * time.Second, 75 * time.Second, window} {
			list := pool(1, 1, 1, 1)
			ramped := list[3]
			ramped.StartRamp(time.Now().Add(-elapsed), SlowStart{Window: window, MinShare: 0.1})
			f := 0.1 + 0.9*float64(elapsed)/float64(window)
			if got := ramped.Ramp(time.Now()); math.Abs(got-f) > 0.01 {
				t.Fatalf("ramp after %v: %v, want %v", elapsed, got, f)
			}
			want := f / (3 + f)
			got := float64(counts(t, mustNew(t, alg, list, Options{}), list, 20000)[3]) / 20000
			tol := 0.02
			if alg == LeastTime && elapsed < window {
				if got > want+tol {
					t.Errorf("%s at %v of the ramp: share %.3f, want at most %.3f", alg, elapsed, got, want)
				}
				continue
			}
			if math.Abs(got-want) > tol {
				t.Errorf("%s at %v of the ramp: share %.3f, want %.3f±%.2f", alg, elapsed, got, want, tol)
			}
		}
	}
}

// TestSlowStartWeighted: the ramp scales a heavier backend's weight.
func TestSlowStartWeighted(t *testing.T) {
	for _, alg := range []Algorithm{WeightedRoundRobin, Random} {
		list := pool(1, 3)
		list[1].StartRamp(time.Now(), SlowStart{Window: time.Hour, MinShare: 0.5}) // weight 3 × 0.5
		got := float64(counts(t, mustNew(t, alg, list, Options{}), list, 20000)[1]) / 20000
		if want := 1.5 / 2.5; math.Abs(got-want) > 0.02 {
			t.Errorf("%s: share %.3f, want %.3f", alg, got, want)
		}
	}
}

// TestSlowStartLoadBound: under load, consistent_hash gives a ramping backend
// at most load_factor × its ramped share of the requests in flight.
func TestSlowStartLoadBound(t *testing.T) {
	list := pool(1, 1, 1, 1)
	list[3].StartRamp(time.Now(), SlowStart{Window: time.Hour, MinShare: 0.1})
	p := mustNew(t, ConsistentHash, list, Options{TableSize: 1009})
	const n = 4000
	for range n {
		b := p.Pick(rand.Uint64(), nil)
		b.Acquire() // all stay in flight
	}
	share := float64(list[3].InFlight()) / n
	if bound := DefaultLoadFactor * 0.1 / 3.1; share > bound+0.005 {
		t.Fatalf("ramping backend holds %.3f of the load, want at most %.3f", share, bound)
	}
}

func TestSlowStartEnds(t *testing.T) {
	b := NewBackend("a:1", 2)
	if b.Ramp(time.Now()) != 1 || b.ramping() {
		t.Fatal("a new backend ramps without StartRamp")
	}
	now := time.Now()
	b.StartRamp(now, SlowStart{Window: time.Second})
	if r := b.Ramp(now); r != DefaultMinShare {
		t.Fatalf("ramp at start %v, want the default min share %v", r, DefaultMinShare)
	}
	if r := b.Ramp(now.Add(500 * time.Millisecond)); math.Abs(r-0.55) > 1e-9 {
		t.Fatalf("ramp half way %v, want 0.55", r)
	}
	if r := b.Ramp(now.Add(time.Second)); r != 1 || b.ramping() {
		t.Fatalf("ramp at the end %v (ramping %v), want 1 and off", r, b.ramping())
	}
	b.StartRamp(now, SlowStart{Window: 0}) // off
	if b.ramping() {
		t.Fatal("a zero window started a ramp")
	}
	b.StartRamp(now, SlowStart{Window: time.Hour})
	b.StopRamp()
	if b.weight() != 2*weightScale {
		t.Fatalf("weight after StopRamp %d, want %d", b.weight(), 2*weightScale)
	}
}

func TestSlowStartValidate(t *testing.T) {
	for _, s := range []SlowStart{{Window: -1}, {Window: 2 * time.Hour}, {Window: time.Second, MinShare: 1.5}, {Window: time.Second, MinShare: -0.1}} {
		if err := s.Validate(); !errors.Is(err, ErrOption) {
			t.Errorf("%+v: %v, want ErrOption", s, err)
		}
	}
	if err := (SlowStart{Window: 30 * time.Second}).Validate(); err != nil {
		t.Fatal(err)
	}
}

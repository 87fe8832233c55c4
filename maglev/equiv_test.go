package maglev

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMatchesReference checks the optimised Builder against the direct
// transcription of the definition on random sets, sizes and weights.
func TestMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []uint32{7, 11, 13, 101, 251, 1009, 4099, 65537}
	var b Builder
	var dst []uint32
	modes := map[int]int{}
	for iter := range 250 {
		m := sizes[rng.IntN(len(sizes))]
		n := 1 + rng.IntN(min(int(m), 300))
		set := make([]Backend, n)
		for i := range set {
			set[i] = Backend{Key: fmt.Sprintf("b%d-%d", iter, i), Weight: 1}
			switch iter % 5 {
			case 1:
				set[i].Weight = uint32(rng.IntN(4))
			case 2:
				set[i].Weight = uint32(1 + rng.IntN(1000))
			case 3:
				set[i].Weight = rng.Uint32()
			case 4: // uneven enough for the heap turn order
				set[i].Weight = uint32(1 + rng.IntN(3))
				if i == 0 {
					set[i].Weight = 1 << 20
				}
			}
		}
		want := referenceBuild(set, m)
		var err error
		dst, err = b.Build(dst, set, m)
		if want == nil {
			if err != ErrNoBackends {
				t.Fatalf("iter %d: got %v, want ErrNoBackends", iter, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		if !slices.Equal(dst, want) {
			t.Fatalf("iter %d (N=%d M=%d, turn mode %d): table differs from the reference", iter, n, m, b.turns.mode)
		}
		modes[b.turns.mode]++
	}
	for _, mode := range []int{equalTurns, creditTurns, heapTurns} {
		if modes[mode] == 0 {
			t.Errorf("no build used turn mode %d", mode)
		}
	}
	t.Logf("builds per turn mode: %v", modes)
}

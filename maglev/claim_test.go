package maglev

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// TestAsmMatchesPortable builds random sets (sizes, weights in every turn
// mode, table sizes from the smallest primes to 1048573) with the assembly
// (claim, earliest) where this machine runs it and with the Go code alone,
// and compares the tables slot by slot.
func TestAsmMatchesPortable(t *testing.T) {
	if runtime.GOARCH == "amd64" && !hasClaim {
		t.Fatal("claim does not run on amd64")
	}
	t.Logf("claim %v, earliest %v", hasClaim, hasEarliest)
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []uint32{7, 11, 13, 17, 31, 101, 257, 1009, 4099, 65537, 1048573}
	var fast, slow Builder
	slow.portable = true
	var a, b []uint32
	for iter := range 120 {
		m := sizes[iter%len(sizes)]
		n := 1 + rng.IntN(min(int(m), 1200))
		if m == 1048573 {
			n = 1 + rng.IntN(100)
		}
		set := make([]Backend, n)
		for i := range set {
			set[i] = Backend{Key: fmt.Sprintf("10.%d.%d.%d", iter, i>>8, i&255), Weight: 1}
			switch iter % 4 {
			case 1:
				set[i].Weight = uint32(rng.IntN(5))
			case 2:
				set[i].Weight = 1 + rng.Uint32N(1<<20)
			case 3: // uneven enough for the heap turn order
				set[i].Weight = 1 + rng.Uint32N(3)
				if i == 0 {
					set[i].Weight = 1 << 20
				}
			}
		}
		var errA, errB error
		a, errA = fast.Build(a, set, m)
		b, errB = slow.Build(b, set, m)
		if errA != errB {
			t.Fatalf("iter %d (N=%d M=%d): errors differ: %v, %v", iter, n, m, errA, errB)
		}
		if !slices.Equal(a, b) {
			t.Fatalf("iter %d (N=%d M=%d, turn mode %d): tables differ", iter, n, m, fast.turns.mode)
		}
	}
}

package maglev

import (
	"fmt"
	"os"
	"testing"
	"time"
)

func minTime(reps int, f func()) time.Duration {
	best := time.Hour
	for range reps {
		t0 := time.Now()
		f()
		best = min(best, time.Since(t0))
	}
	return best
}

func TestScratchTiming(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	for _, tc := range benchSizes {
		set := benchSet(tc.n)
		var b Builder
		dst, _ := b.Build(nil, set, tc.m)
		reps := 300
		if tc.m > 100000 {
			reps = 20
		}
		d := minTime(reps, func() { dst, _ = b.Build(dst, set, tc.m) })
		fmt.Printf("N=%d M=%d build %v\n", tc.n, tc.m, d)
	}
}

package maglev

import (
	"fmt"
	"slices"
	"testing"
	"time"

	kkdai "github.com/kkdai/maglev"
)

// benchSet returns n backends of weight 1 with addresses as Keys, as the
// daemon uses them.
func benchSet(n int) []Backend {
	s := make([]Backend, n)
	for i := range s {
		s[i] = Backend{Key: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Weight: 1}
	}
	return s
}

var benchSizes = []struct {
	n int
	m uint32
}{
	{10, 65537},
	{100, 65537},
	{1000, 65537},
	{1000, 1048573},
}

// BenchmarkBuild is the package function: a fresh table and scratch space
// every time, as github.com/kkdai/maglev does.
func BenchmarkBuild(b *testing.B) {
	for _, tc := range benchSizes {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			s := benchSet(tc.n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(s, tc.m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuilder rebuilds into the same table with a reused Builder, as the
// daemon does: no allocation.
func BenchmarkBuilder(b *testing.B) {
	for _, tc := range benchSizes {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			s := benchSet(tc.n)
			var bu Builder
			dst, err := bu.Build(nil, s, tc.m)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				dst, _ = bu.Build(dst, s, tc.m)
			}
		})
	}
}

// BenchmarkKkdai is github.com/kkdai/maglev v0.2.0 on the same inputs at
// M = 65537; its N×M permutation matrix rules out M = 1048573.
func BenchmarkKkdai(b *testing.B) {
	for _, tc := range benchSizes[:3] {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			s := benchSet(tc.n)
			keys := make([]string, len(s))
			for i := range s {
				keys[i] = s[i].Key
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kkdai.NewMaglev(keys, uint64(tc.m)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVsKkdai runs github.com/kkdai/maglev once and Build and a reused
// Builder 10 times each per iteration, alternately on the same input, and
// reports their fastest runs and the ratios of those ("speedup" for Build,
// "speedup-builder"): on a busy machine the fastest run of each is a steadier
// figure than the means of separate benchmarks. Its ns/op is that of a whole
// iteration and means nothing alone.
func BenchmarkVsKkdai(b *testing.B) {
	for _, tc := range benchSizes[:3] {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			s := benchSet(tc.n)
			keys := make([]string, len(s))
			for i := range s {
				keys[i] = s[i].Key
			}
			var bu Builder
			dst, _ := bu.Build(nil, s, tc.m)
			bestK, bestX, bestB := time.Duration(1<<62), time.Duration(1<<62), time.Duration(1<<62)
			for b.Loop() {
				t0 := time.Now()
				if _, err := kkdai.NewMaglev(keys, uint64(tc.m)); err != nil {
					b.Fatal(err)
				}
				bestK = min(bestK, time.Since(t0))
				for range 10 {
					t0 = time.Now()
					if _, err := Build(s, tc.m); err != nil {
						b.Fatal(err)
					}
					bestX = min(bestX, time.Since(t0))
					t0 = time.Now()
					dst, _ = bu.Build(dst, s, tc.m)
					bestB = min(bestB, time.Since(t0))
				}
			}
			b.ReportMetric(float64(bestK.Nanoseconds()), "kkdai-min-ns")
			b.ReportMetric(float64(bestX.Nanoseconds()), "build-min-ns")
			b.ReportMetric(float64(bestB.Nanoseconds()), "builder-min-ns")
			b.ReportMetric(float64(bestK)/float64(bestX), "speedup")
			b.ReportMetric(float64(bestK)/float64(bestB), "speedup-builder")
		})
	}
}

// BenchmarkDisruption reports the share of slots that move when one backend
// of N is removed (a different one each iteration, in turn over the Key sets
// of TestDisruption) or one is added, as "moved-%" and as a multiple of the
// ideal 1/N or 1/(N+1), "x-ideal".
func BenchmarkDisruption(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, change := range []string{"remove", "add"} {
			b.Run(fmt.Sprintf("N=%d/%s", n, change), func(b *testing.B) {
				type keySet struct {
					full, base []Backend
					table      []uint32
				}
				sets := make([]keySet, len(disruptionKeySets))
				for i, format := range disruptionKeySets {
					full := make([]Backend, n+1)
					for j := range full {
						full[j] = Backend{Key: fmt.Sprintf(format, j/250, 1+j%250), Weight: 1}
					}
					table, err := Build(full[:n], DefaultSize)
					if err != nil {
						b.Fatal(err)
					}
					sets[i] = keySet{full, full[:n], table}
				}
				var bu Builder
				var dst []uint32
				sum, k := 0.0, 0
				for b.Loop() {
					ks := &sets[k/n%len(sets)]
					after := ks.full
					if change == "remove" {
						after = slices.Concat(ks.base[:k%n], ks.base[k%n+1:])
					}
					dst, _ = bu.Build(dst, after, DefaultSize)
					sum += Disruption(ks.table, ks.base, dst, after)
					k++
				}
				mean := sum / float64(k)
				ideal := 1 / float64(n)
				if change == "add" {
					ideal = 1 / float64(n+1)
				}
				b.ReportMetric(100*mean, "moved-%")
				b.ReportMetric(mean/ideal, "x-ideal")
			})
		}
	}
}

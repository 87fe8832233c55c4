package maglev

import (
	"fmt"
	"testing"

	kkdai "github.com/kkdai/maglev"
)

// benchSet returns n backends with addresses as Keys, as the daemon uses them.
func benchSet(n int) []Backend {
	set := make([]Backend, n)
	for i := range set {
		set[i] = Backend{Key: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Weight: 1}
	}
	return set
}

func keys(set []Backend) []string {
	ks := make([]string, len(set))
	for i, b := range set {
		ks[i] = b.Key
	}
	return ks
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

// BenchmarkBuild measures a rebuild with a reused Builder, as the daemon does.
func BenchmarkBuild(b *testing.B) {
	for _, tc := range benchSizes {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			set := benchSet(tc.n)
			var bu Builder
			dst, err := bu.Build(nil, set, tc.m)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst, _ = bu.Build(dst, set, tc.m)
			}
		})
	}
}

// BenchmarkReference is the direct transcription of the definition.
func BenchmarkReference(b *testing.B) {
	for _, tc := range benchSizes[:3] {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			set := benchSet(tc.n)
			b.ReportAllocs()
			for b.Loop() {
				referenceBuild(set, tc.m)
			}
		})
	}
}

// BenchmarkKkdai is github.com/kkdai/maglev v0.2.0 on the same inputs.
func BenchmarkKkdai(b *testing.B) {
	for _, tc := range benchSizes[:3] {
		b.Run(fmt.Sprintf("N=%d/M=%d", tc.n, tc.m), func(b *testing.B) {
			ks := keys(benchSet(tc.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kkdai.NewMaglev(ks, uint64(tc.m)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

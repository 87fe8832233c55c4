package maglev

import (
	"errors"
	"slices"
	"testing"
)

func TestBuilderReusesDst(t *testing.T) {
	b := NewBuilder()
	backends := set(10, 1)
	dst := make([]uint32, 5, 100)
	got, err := b.Build(dst, backends, 97)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("Build allocated a new table although dst had room")
	}
	if want := mustBuild(t, backends, 97); !slices.Equal(got, want) {
		t.Error("Builder.Build and Build differ")
	}
	// Too small a dst is replaced, and an error leaves an empty table.
	if got, _ = b.Build(make([]uint32, 0, 3), backends, 101); len(got) != 101 {
		t.Errorf("%d slots, want 101", len(got))
	}
	if got, err = b.Build(dst, nil, 97); !errors.Is(err, ErrNoBackends) || len(got) != 0 {
		t.Errorf("empty set: %d slots, err %v", len(got), err)
	}
}

func TestBuilderRebuildAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name     string
		backends []Backend
	}{
		{"equal weights", set(100, 1)},
		{"weighted", func() []Backend {
			s := set(100, 1)
			for i := range s {
				s[i].Weight = uint32(i % 4)
			}
			return s
		}()},
	} {
		var b Builder
		dst, err := b.Build(nil, tc.backends, 65537)
		if err != nil {
			t.Fatal(err)
		}
		shuffled := slices.Clone(tc.backends)
		slices.Reverse(shuffled)
		allocs := testing.AllocsPerRun(5, func() {
			dst, _ = b.Build(dst, tc.backends, 65537)
			dst, _ = b.Build(dst, shuffled, 65537)
			dst, _ = b.Build(dst, tc.backends[:50], 65537)
		})
		if allocs != 0 {
			t.Errorf("%s: rebuild allocated %.0f times, want 0", tc.name, allocs)
		}
	}
}

package maglev

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestCacheSharesTables(t *testing.T) {
	c := NewCache(4)
	a := set(50, 1)
	first, err := c.Build(a, 65537)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustBuild(t, a, 65537); !slices.Equal(first, want) {
		t.Fatal("cached table differs from Build")
	}
	again, _ := c.Build(slices.Clone(a), 65537)
	if &again[0] != &first[0] {
		t.Error("same set built twice")
	}
	if h, m := c.Stats(); h != 1 || m != 1 {
		t.Errorf("hits, misses = %d, %d; want 1, 1", h, m)
	}
	// Another order, size or weight is another table.
	rev := slices.Clone(a)
	slices.Reverse(rev)
	heavier := slices.Clone(a)
	heavier[3].Weight = 2
	for _, tc := range []struct {
		name     string
		backends []Backend
		size     uint32
	}{
		{"reversed", rev, 65537},
		{"other size", a, 65521},
		{"other weight", heavier, 65537},
	} {
		got, err := c.Build(tc.backends, tc.size)
		if err != nil {
			t.Fatal(err)
		}
		if want := mustBuild(t, tc.backends, tc.size); !slices.Equal(got, want) {
			t.Errorf("%s: table differs from Build", tc.name)
		}
	}
	if h, m := c.Stats(); h != 1 || m != 4 {
		t.Errorf("hits, misses = %d, %d; want 1, 4", h, m)
	}
}

func TestCacheKeyUnambiguous(t *testing.T) {
	// Key boundaries must be part of the cache key.
	x := []Backend{{Key: "ab", Weight: 1}, {Key: "c", Weight: 1}}
	y := []Backend{{Key: "a", Weight: 1}, {Key: "bc", Weight: 1}}
	if cacheKey(x, 7) == cacheKey(y, 7) {
		t.Error("different sets share a cache key")
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := NewCache(2)
	a, b, d := set(3, 1), set(4, 1), set(5, 1)
	c.Build(a, 101)
	c.Build(b, 101)
	c.Build(a, 101) // a is now the most recently used
	c.Build(d, 101) // evicts b
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
	_, m0 := c.Stats()
	c.Build(a, 101)
	if _, m := c.Stats(); m != m0 {
		t.Error("most recently used entry was evicted")
	}
	c.Build(b, 101)
	if _, m := c.Stats(); m != m0+1 {
		t.Error("least recently used entry was kept")
	}
}

func TestCacheDoesNotKeepErrors(t *testing.T) {
	c := NewCache(0)
	for range 2 {
		if _, err := c.Build(nil, 65537); !errors.Is(err, ErrNoBackends) {
			t.Fatalf("err = %v, want ErrNoBackends", err)
		}
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d after failed builds, want 0", c.Len())
	}
	if _, m := c.Stats(); m != 2 {
		t.Errorf("misses = %d, want 2", m)
	}
}

func TestCacheConcurrentBuildsOnce(t *testing.T) {
	c := NewCache(8)
	sets := [][]Backend{set(100, 1), set(200, 1)}
	const workers = 16
	results := make([][]uint32, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			table, err := c.Build(sets[w%2], 65537)
			if err != nil {
				t.Error(err)
			}
			results[w] = table
		})
	}
	wg.Wait()
	if h, m := c.Stats(); m != 2 || h != workers-2 {
		t.Errorf("hits, misses = %d, %d; want %d, 2", h, m, workers-2)
	}
	for w := range workers {
		if &results[w][0] != &results[w%2][0] {
			t.Errorf("worker %d got its own copy", w)
		}
	}
}

package balance

import (
	"math"
	"testing"
)

func keyOf(i int) uint64 { return mix(uint64(i)) }

// TestHashDisruption removes one of five backends: the keys it owned move,
// and (almost) no other key does.
func TestHashDisruption(t *testing.T) {
	const keys = 20000
	full := pool(1, 1, 1, 1, 1)
	before := mustNew(t, ConsistentHash, full, Options{TableSize: 65537})
	removed := full[2]
	rest := append(append([]*Backend(nil), full[:2]...), full[3:]...)
	after := mustNew(t, ConsistentHash, rest, Options{TableSize: 65537})
	var owned, moved int
	for i := range keys {
		b, a := before.Pick(keyOf(i), nil), after.Pick(keyOf(i), nil)
		if b == removed {
			owned++
			continue
		}
		if a != b {
			moved++
		}
	}
	if owned < keys/5*8/10 {
		t.Errorf("removed backend owned %d keys, want about %d", owned, keys/5)
	}
	// Maglev is near-minimal: a few keys of surviving backends move too.
	if limit := (keys - owned) / 50; moved > limit {
		t.Errorf("%d keys of surviving backends moved, want at most %d (2%%)", moved, limit)
	}
}

// TestHashSameKeySameBackend: equal keys meet on one backend, on any number
// of pickers built from the same pool.
func TestHashSameKeySameBackend(t *testing.T) {
	a := mustNew(t, ConsistentHash, pool(1, 1, 1), Options{})
	b := mustNew(t, ConsistentHash, pool(1, 1, 1), Options{})
	for i := range 1000 {
		if x, y := a.Pick(keyOf(i), nil), b.Pick(keyOf(i), nil); x.ID != y.ID {
			t.Fatalf("key %d: %s on one picker, %s on the other", i, x.ID, y.ID)
		}
	}
}

// TestHashUnusable: a key whose backend is unusable goes to another one and
// comes back once it is usable again; other keys do not move.
func TestHashUnusable(t *testing.T) {
	list := pool(1, 1, 1, 1)
	p := mustNew(t, ConsistentHash, list, Options{})
	home := make([]*Backend, 2000)
	for i := range home {
		home[i] = p.Pick(keyOf(i), nil)
	}
	down := list[1]
	usable := func(b *Backend) bool { return b != down }
	for i, h := range home {
		got := p.Pick(keyOf(i), usable)
		switch {
		case got == down:
			t.Fatalf("key %d picked the unusable backend", i)
		case h != down && got != h:
			t.Fatalf("key %d moved from %s to %s though its backend is usable", i, h.ID, got.ID)
		}
	}
	for i, h := range home {
		if got := p.Pick(keyOf(i), nil); got != h {
			t.Fatalf("key %d: back to %s, want %s", i, got.ID, h.ID)
		}
	}
}

// TestHashBoundedLoad sends 200 requests with one hot key and holds them
// open: with load factor c no backend carries more than
// ceil(c × (total+1) / n); without a bound all land on one backend.
func TestHashBoundedLoad(t *testing.T) {
	tests := []struct {
		name       string
		loadFactor float64
		wantMax    int64
	}{
		{"c=1.25", 1.25, int64(math.Ceil(1.25 * 200 / 4))},
		{"c=1", 1, 50},
		{"c=2", 2, 100},
		{"unbounded", math.Inf(1), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := pool(1, 1, 1, 1)
			p := mustNew(t, ConsistentHash, list, Options{LoadFactor: tt.loadFactor})
			home := p.Pick(keyOf(7), nil)
			for range 200 {
				p.Pick(keyOf(7), nil).Acquire()
			}
			var most int64
			for _, b := range list {
				most = max(most, b.InFlight())
			}
			if most != tt.wantMax {
				t.Errorf("busiest backend has %d in flight, want %d", most, tt.wantMax)
			}
			if home.InFlight() != most {
				t.Errorf("the key's own backend has %d in flight, want it full (%d)", home.InFlight(), most)
			}
			// Once the load drains, the key is back on its own backend.
			for _, b := range list {
				for b.InFlight() > 0 {
					b.Release(0, false)
				}
			}
			if got := p.Pick(keyOf(7), nil); got != home {
				t.Errorf("after drain: %s, want %s", got.ID, home.ID)
			}
		})
	}
}

// TestHashWeightedBound: the bound is per unit of weight.
func TestHashWeightedBound(t *testing.T) {
	list := pool(3, 1)
	p := mustNew(t, ConsistentHash, list, Options{LoadFactor: 1})
	for range 400 {
		p.Pick(keyOf(1), nil).Acquire()
	}
	if a, b := list[0].InFlight(), list[1].InFlight(); a != 300 || b != 100 {
		t.Errorf("in flight %d/%d, want 300/100", a, b)
	}
}

// TestHashOrderIndependent: which backend a key lands on depends on the
// backends' IDs, not on their order in the pool, so proxies that list the
// same pool differently agree.
func TestHashOrderIndependent(t *testing.T) {
	list := pool(1, 2, 1, 3)
	reversed := []*Backend{list[3], list[2], list[1], list[0]}
	a := mustNew(t, ConsistentHash, list, Options{TableSize: 4099})
	b := mustNew(t, ConsistentHash, reversed, Options{TableSize: 4099})
	for i := range 2000 {
		if x, y := a.Pick(keyOf(i), nil), b.Pick(keyOf(i), nil); x != y {
			t.Fatalf("key %d: %s in one order, %s in the other", i, x.ID, y.ID)
		}
	}
}

package balance

import (
	"fmt"
	"math"

	"github.com/xlb-project/xlb/maglev"
)

// hashWalkExtra bounds the walk through the table for a key whose backend is
// unusable or full: after len(backends)×hashWalkPerBackend+hashWalkExtra slots
// Pick falls back to the least loaded usable backend.
const (
	hashWalkPerBackend = 8
	hashWalkExtra      = 64
)

// hash is consistent hashing with bounded load over a Maglev table.
//
// A key goes to the backend owning slot key mod M. If that backend is unusable,
// or already carries its share of LoadFactor × (requests in flight over the
// usable backends + 1), weighted, the key walks on to the following slots and
// takes the first backend that is usable and has room. The walk for a key is
// the same on every proxy with the same backends and depends only on which
// backends are unusable or full, so a key moves only while its backend cannot
// take it; removing a backend moves only the keys of its slots (Maglev's
// minimal disruption). With LoadFactor c no backend carries more than about c
// times its weighted share of the requests in flight, however hot one key is.
type hash struct {
	backends   []*Backend
	table      []uint32
	loadFactor float64
	walk       int
}

func newHash(list []*Backend, opts Options) (*hash, error) {
	p := &hash{backends: list, loadFactor: opts.LoadFactor}
	if len(list) == 0 {
		return p, nil
	}
	in := make([]maglev.Backend, len(list))
	for i, b := range list {
		in[i] = maglev.Backend{Key: b.ID, Weight: uint32(b.baseWeight())}
	}
	table, err := maglev.Build(in, opts.TableSize)
	if err != nil {
		return nil, fmt.Errorf("build maglev table of %d slots for %d backends: %w", opts.TableSize, len(list), err)
	}
	p.table = table
	p.walk = min(len(table), len(list)*hashWalkPerBackend+hashWalkExtra)
	return p, nil
}

func (p *hash) Pick(key uint64, usable func(*Backend) bool) *Backend {
	m := uint64(len(p.table))
	if m == 0 {
		return nil
	}
	// Per unit of weight, a backend may carry up to
	// ceil(loadFactor × (total+1) × weight / weightSum) requests in flight;
	// total and weightSum count only the usable backends.
	bounded := !math.IsInf(p.loadFactor, 1)
	var total, wsum int64
	if bounded {
		for _, b := range p.backends {
			if ok(usable, b) {
				total += b.InFlight()
				wsum += b.weight()
			}
		}
		if wsum == 0 {
			return nil
		}
	}
	fits := func(b *Backend) bool {
		if !bounded {
			return true
		}
		capacity := math.Ceil(p.loadFactor * float64(total+1) * float64(b.weight()) / float64(wsum))
		return float64(b.InFlight()) < capacity
	}
	slot := key % m
	for i := 0; i < p.walk; i++ {
		b := p.backends[p.table[slot]]
		if ok(usable, b) && fits(b) {
			return b
		}
		slot++
		if slot == m {
			slot = 0
		}
	}
	var best *Backend
	var bestLoad int64
	for _, b := range p.backends {
		if !ok(usable, b) {
			continue
		}
		if load := b.InFlight(); best == nil || lighter(load, b, bestLoad, best) {
			best, bestLoad = b, load
		}
	}
	return best
}

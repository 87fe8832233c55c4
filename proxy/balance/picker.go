package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
)

// Algorithm names a way of choosing a backend, as written in the config.
type Algorithm string

// The algorithms New accepts.
const (
	// RoundRobin takes the backends in turn, ignoring weights.
	RoundRobin Algorithm = "round_robin"
	// WeightedRoundRobin is smooth weighted round-robin (as nginx does it):
	// over a cycle each backend gets its weight's share, interleaved, with no
	// run of picks to the heaviest backend.
	WeightedRoundRobin Algorithm = "weighted_round_robin"
	// LeastConn picks the backend with the fewest requests in flight per unit
	// of weight; ties go round-robin.
	LeastConn Algorithm = "least_conn"
	// P2C draws two backends at random and takes the one with fewer requests
	// in flight per unit of weight.
	P2C Algorithm = "p2c"
	// Random draws a backend at random in proportion to the weights.
	Random Algorithm = "random"
	// LeastTime picks the lowest moving average of latency times (requests in
	// flight + 1), per unit of weight; backends with no sample yet go first.
	LeastTime Algorithm = "least_time"
	// ConsistentHash maps the request's key through a Maglev table, with
	// bounded load (see Options.LoadFactor).
	ConsistentHash Algorithm = "consistent_hash"
)

// Algorithms lists every algorithm, in documentation order.
var Algorithms = []Algorithm{RoundRobin, WeightedRoundRobin, LeastConn, P2C, Random, LeastTime, ConsistentHash}

// Defaults for Options.
const (
	DefaultTableSize  = 65537
	DefaultLoadFactor = 1.25
	// MaxWeight is the largest weight a backend may have.
	MaxWeight = 1 << 20
)

// Errors New returns for bad input; the messages wrapped around them name
// the field and value.
var (
	ErrAlgorithm = errors.New("unknown algorithm")
	ErrBackend   = errors.New("invalid backend")
	ErrOption    = errors.New("invalid option")
)

// Options tune the algorithms that have knobs.
type Options struct {
	// TableSize is the number of slots of the consistent_hash Maglev table; a
	// prime well above 100 × the number of backends keeps the shares within
	// about 1%. Default 65537.
	TableSize uint32
	// LoadFactor bounds consistent_hash: a backend whose requests in flight
	// would exceed LoadFactor × the average over the usable backends is
	// passed over for this request, and the key walks on through the table to
	// the next backend that has room. Must be at least 1; default 1.25.
	// math.Inf(1) turns the bound off.
	LoadFactor float64
}

// Picker chooses a backend for a request. Pick is safe for concurrent use and
// does not allocate. key is the request's hash key (see KeySource), used only
// by consistent_hash. usable says whether a backend may take a new request
// (nil: all may); Pick returns nil when none may. Pick does not call Acquire:
// the caller does when it sends the request.
type Picker interface {
	Pick(key uint64, usable func(*Backend) bool) *Backend
}

// New returns a picker of the given algorithm over backends. backends may be
// empty (every Pick then returns nil); IDs must be unique and weights between
// 0 and MaxWeight.
func New(alg Algorithm, backends []*Backend, opts Options) (Picker, error) {
	seen := make(map[string]bool, len(backends))
	for i, b := range backends {
		if b == nil {
			return nil, fmt.Errorf("%w: backends[%d] is nil", ErrBackend, i)
		}
		if b.ID == "" {
			return nil, fmt.Errorf("%w: backends[%d].id is empty: want host:port", ErrBackend, i)
		}
		if seen[b.ID] {
			return nil, fmt.Errorf("%w: backends[%d].id %q appears twice: ids must be unique", ErrBackend, i, b.ID)
		}
		seen[b.ID] = true
		if b.Weight < 0 || b.Weight > MaxWeight {
			return nil, fmt.Errorf("%w: backend %q weight %d: allowed 0 (meaning 1) to %d", ErrBackend, b.ID, b.Weight, MaxWeight)
		}
	}
	list := append([]*Backend(nil), backends...)
	switch alg {
	case RoundRobin:
		return &roundRobin{backends: list}, nil
	case WeightedRoundRobin:
		return newSmooth(list), nil
	case LeastConn:
		return &leastConn{backends: list}, nil
	case P2C:
		return &p2c{backends: list}, nil
	case Random:
		return newRandom(list), nil
	case LeastTime:
		return &leastTime{backends: list}, nil
	case ConsistentHash:
		if opts.TableSize == 0 {
			opts.TableSize = DefaultTableSize
		}
		if opts.LoadFactor == 0 {
			opts.LoadFactor = DefaultLoadFactor
		}
		if opts.LoadFactor < 1 || math.IsNaN(opts.LoadFactor) {
			return nil, fmt.Errorf("%w: load_factor %v: allowed 1 or more (or +Inf for no bound)", ErrOption, opts.LoadFactor)
		}
		return newHash(list, opts)
	}
	names := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		names[i] = string(a)
	}
	return nil, fmt.Errorf("%w: algorithm %q: allowed %s", ErrAlgorithm, alg, strings.Join(names, ", "))
}

// ParseAlgorithm checks a config value; the empty string means round_robin.
func ParseAlgorithm(s string) (Algorithm, error) {
	if s == "" {
		return RoundRobin, nil
	}
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	names := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		names[i] = string(a)
	}
	return "", fmt.Errorf("%w: algorithm %q: allowed %s", ErrAlgorithm, s, strings.Join(names, ", "))
}

func ok(usable func(*Backend) bool, b *Backend) bool {
	return usable == nil || usable(b)
}

// rotor hands out positions 0, 1, 2, ... mod n. A position whose backend is
// unusable is passed over by drawing the next position, not by moving to the
// next backend, so each usable backend is still reached once per n draws
// (the backend after an unusable one does not get its share too).
type rotor struct {
	next atomic.Uint64
}

// start returns the next position of a usable backend, or -1 after n draws
// found none. A backend in slow start is passed over with probability
// 1 − ramp (passOver); if every usable one was, the first of them is taken.
func (r *rotor) start(backends []*Backend, usable func(*Backend) bool) int {
	n := uint64(len(backends))
	passed := -1
	for range n {
		i := (r.next.Add(1) - 1) % n
		if b := backends[i]; ok(usable, b) {
			if b.passOver() {
				if passed < 0 {
					passed = int(i)
				}
				continue
			}
			return int(i)
		}
	}
	return passed
}

// roundRobin takes the backends in turn.
type roundRobin struct {
	backends []*Backend
	rotor
}

func (p *roundRobin) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	if i := p.start(p.backends, usable); i >= 0 {
		return p.backends[i]
	}
	return nil
}

// smooth is nginx's smooth weighted round-robin: every pick adds each usable
// backend's weight to its current value, takes the largest and subtracts the
// total of the weights from it.
type smooth struct {
	backends []*Backend
	mu       sync.Mutex
	current  []int64
}

func newSmooth(list []*Backend) *smooth {
	return &smooth{backends: list, current: make([]int64, len(list))}
}

func (p *smooth) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := -1
	var total int64
	for i, b := range p.backends {
		if !ok(usable, b) {
			continue
		}
		w := b.weight()
		p.current[i] += w
		total += w
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	p.current[best] -= total
	return p.backends[best]
}

// lighter reports whether a carries less load per unit of weight than b, for
// loads la and lb: la/wa < lb/wb without division.
func lighter(la int64, a *Backend, lb int64, b *Backend) bool {
	return la*b.weight() < lb*a.weight()
}

// leastConn scans every backend from a rotating start, so that ties are
// spread round-robin.
type leastConn struct {
	backends []*Backend
	rotor
}

func (p *leastConn) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	start := p.start(p.backends, usable)
	if start < 0 {
		return nil
	}
	n := len(p.backends)
	var best, passed *Backend
	var bestLoad int64
	for i := 0; i < n; i++ {
		b := p.backends[(start+i)%n]
		if !ok(usable, b) {
			continue
		}
		if i > 0 && b.passOver() {
			passed = b
			continue
		}
		load := b.InFlight()
		if best == nil || lighter(load, b, bestLoad, best) {
			best, bestLoad = b, load
		}
	}
	if best == nil {
		return passed
	}
	return best
}

// p2cTries is how many random draws p2c and random make before scanning for
// a usable backend.
const p2cTries = 8

// p2c draws two distinct backends and keeps the lighter; unusable draws are
// redrawn a few times, then the usable ones are found by a scan.
type p2c struct {
	backends []*Backend
}

func (p *p2c) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	n := len(p.backends)
	switch n {
	case 0:
		return nil
	case 1:
		if b := p.backends[0]; ok(usable, b) {
			return b
		}
		return nil
	}
	var a, b *Backend
	for try := 0; try < p2cTries && (a == nil || b == nil); try++ {
		c := p.backends[rand.IntN(n)]
		if c == a || !ok(usable, c) || c.passOver() {
			continue
		}
		if a == nil {
			a = c
		} else {
			b = c
		}
	}
	if a == nil || b == nil {
		// Most backends are unusable: draw among the usable ones.
		start := rand.IntN(n)
		for i := 0; i < n && (a == nil || b == nil); i++ {
			c := p.backends[(start+i)%n]
			if c == a || !ok(usable, c) {
				continue
			}
			if a == nil {
				a = c
			} else {
				b = c
			}
		}
	}
	if b == nil {
		return a
	}
	if lighter(b.InFlight(), b, a.InFlight(), a) {
		return b
	}
	return a
}

// random draws from the cumulative weights; when the draw is unusable it
// redraws a few times and then scans from a random start.
type random struct {
	backends []*Backend
	cum      []int64 // cum[i] = sum of the weights of backends[0..i]
}

func newRandom(list []*Backend) *random {
	cum := make([]int64, len(list))
	var sum int64
	for i, b := range list {
		sum += b.baseWeight()
		cum[i] = sum
	}
	return &random{backends: list, cum: cum}
}

func (p *random) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	n := len(p.backends)
	if n == 0 {
		return nil
	}
	total := p.cum[n-1]
	for try := 0; try < p2cTries; try++ {
		r := rand.Int64N(total)
		lo, hi := 0, n-1
		for lo < hi {
			mid := (lo + hi) / 2
			if p.cum[mid] > r {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		// A backend in slow start is kept with probability ramp: shares in
		// proportion to weight × ramp (rejection sampling).
		if b := p.backends[lo]; ok(usable, b) && !b.passOver() {
			return b
		}
	}
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		if b := p.backends[(start+i)%n]; ok(usable, b) {
			return b
		}
	}
	return nil
}

// leastTime scores each backend by latency × (in flight + 1) / weight, from a
// rotating start so that ties (e.g. no samples yet) spread round-robin.
type leastTime struct {
	backends []*Backend
	rotor
}

func (p *leastTime) Pick(_ uint64, usable func(*Backend) bool) *Backend {
	start := p.start(p.backends, usable)
	if start < 0 {
		return nil
	}
	n := len(p.backends)
	var best, passed *Backend
	var bestScore float64
	for i := 0; i < n; i++ {
		b := p.backends[(start+i)%n]
		if !ok(usable, b) {
			continue
		}
		if i > 0 && b.passOver() {
			passed = b
			continue
		}
		score := float64(b.ewma.Load()) * float64(b.InFlight()+1) / float64(b.weight())
		if best == nil || score < bestScore {
			best, bestScore = b, score
		}
	}
	if best == nil {
		return passed
	}
	return best
}

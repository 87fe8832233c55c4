// Package maglev builds Maglev consistent-hashing lookup tables (Eisenbud et
// al., "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI
// 2016, section 3.4).
//
// A table has M slots, M prime. Every backend gets a permutation of the slots
// from two hashes of its Key:
//
//	offset = SipHash-2-4(offsetSeed, Key) mod M
//	skip   = SipHash-2-4(skipSeed, Key) mod (M-1) + 1
//	permutation[j] = (offset + j·skip) mod M,  j = 0 … M-1
//
// and the backends, sorted by Key (byte order), take turns claiming the next
// slot of their permutation that nobody holds yet, until all slots are held.
// A backend of weight w takes a turn in a round when its credit, increased by
// w every round, reaches the largest weight in the set (then decreases by it;
// turns.go schedules this without visiting idle backends),
// so its share of turns, and of slots, is w/Σw; with equal weights every
// backend takes one turn per round, exactly as in the paper. Weight 0 means
// the backend is in the set but takes no turns (draining): the table is the
// one without it.
//
// The result depends only on the set of (Key, Weight) pairs and M, never on
// input order, the machine or the Go version: SipHash is defined on bytes, the
// seeds are fixed (see hash.go), and the turn order is the Key order. Several
// balancers given the same set therefore build byte-identical tables (up to
// the caller's mapping of input positions to its own IDs). AlgorithmVersion
// names this definition; a golden checksum test guards it.
//
// Build cost: permutations are computed on the fly (no N×M matrix); slot
// occupancy is a bitset of M bits; probing steps by addition, not division,
// and tests 8 or 16 slots per step once the table fills up.
// When few free slots are left, where probing would cost most, a backend's
// next slot is found as the free slot with the smallest position in its
// permutation, (slot − offset)·skip⁻¹ mod M, which gives the same table.
// On amd64 the probing runs in assembly (claim_amd64.s: the Go compiler
// spills and moves around its 128-bit multiplies, and a call per turn costs
// as much as a probe, so claim takes a batch of turns and steps slots by
// compare-and-subtract), and with AVX-512 the free-slot search takes 8 slots
// per step (earliest_amd64.s); both give the same tables as the Go code,
// which other architectures run. Vector gathers for probing were measured
// slower than scalar loads (on a Zen 5 VM a 16-lane VPGATHERDD took about
// twice as long as 16 loads), so claim uses none.
// Memory beyond the table is M/8 bytes (M/4 where claim runs: it keeps a
// copy of the bitset) plus O(N).
package maglev

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// AlgorithmVersion identifies the table definition in the package comment
// (hash, seeds, turn order, weights). Balancers that share traffic must run
// the same version.
const AlgorithmVersion = 1

// Errors a caller can act on.
var (
	// ErrNoBackends: the set is empty or every weight is 0. The table
	// returned with it is empty.
	ErrNoBackends = errors.New("no backend with weight > 0")
	// ErrSize: the table size is not an allowed prime, or smaller than the
	// number of backends with weight > 0. It is wrapped with the value and
	// what is allowed.
	ErrSize = errors.New("invalid maglev table size")
	// ErrDuplicateKey: two backends have the same Key. It is wrapped with
	// the Key and both input positions.
	ErrDuplicateKey = errors.New("duplicate backend key")
)

// Backend is one member of a backend set.
type Backend struct {
	// Key is the backend's stable identity, the same on every balancer
	// (its address, such as "198.51.100.11", not a node-local ID). It alone
	// decides the backend's permutation.
	Key string
	// Weight is the backend's share of slots relative to the others; 0
	// keeps it in the set with no slots.
	Weight uint32
}

// Build returns a table of size slots: table[slot] is the position in
// backends of the backend owning the slot. size must be a prime in [MinSize,
// MaxSize] (DefaultSize unless configured); Keys must be unique. With no
// backend of weight > 0 it returns an empty table and ErrNoBackends.
func Build(backends []Backend, size uint32) ([]uint32, error) {
	b := scratch.Get().(*Builder)
	defer scratch.Put(b)
	return b.Build(nil, backends, size)
}

// scratch holds Builders for Build, so that a one-off build allocates only
// the table it returns.
var scratch = sync.Pool{New: func() any { return new(Builder) }}

// Builder builds tables reusing its scratch space, so a rebuild of a set of
// similar size allocates nothing. A Builder is not safe for concurrent use.
type Builder struct {
	order []uint32 // input positions sorted by Key
	perms []perm   // backends with weight > 0, in Key order
	used  []uint64 // occupancy bitset, one bit per slot
	free  []uint32 // the free slots, in the tail phase
	turns turns
	walks []walk   // claim's state per backend, like perms
	batch []uint32 // turn order handed to claim
	// portable makes fill use only its Go code, not claim and earliest
	// (tests compare both).
	portable bool
}

// NewBuilder returns an empty Builder; the zero Builder is ready to use too.
func NewBuilder() *Builder { return new(Builder) }

// perm is the state of one backend's permutation while building.
type perm struct {
	// x is the next slot to probe, offset + j·skip (mod M) for the next j,
	// as the 64-bit binary fraction ⌈…·2^64/M⌉ of M: the slot is
	// ⌊x·M/2^64⌋, and the step to the next j is adding step = ⌈skip·2^64/M⌉
	// (see fraction).
	x, step uint64
	credit  uint64
	skip    uint32
	offset  uint32
	index   uint32 // position in the input
	weight  uint32
	// invX and invBase give a slot's position j in the permutation in the
	// tail phase (see fill); invX is 0 until then.
	invX, invBase uint64
}

// Build is the package function Build writing into dst, which it reuses when
// its capacity is at least size. The returned slice aliases dst then.
func (b *Builder) Build(dst []uint32, backends []Backend, size uint32) ([]uint32, error) {
	dst = dst[:0]
	if err := checkPrime(size); err != nil {
		return dst, err
	}
	order := b.order[:0]
	for i := range backends {
		order = append(order, uint32(i))
	}
	slices.SortFunc(order, func(x, y uint32) int {
		return strings.Compare(backends[x].Key, backends[y].Key)
	})
	b.order = order
	perms := b.perms[:0]
	var wmax uint32
	for k, i := range order {
		be := &backends[i]
		if k > 0 && backends[order[k-1]].Key == be.Key {
			j := order[k-1]
			return dst, fmt.Errorf("build maglev table: %w: %q at positions %d and %d", ErrDuplicateKey, be.Key, min(i, j), max(i, j))
		}
		if be.Weight == 0 {
			continue
		}
		wmax = max(wmax, be.Weight)
		offset := uint32(sipHash(offsetSeed, be.Key) % uint64(size))
		skip := uint32(sipHash(skipSeed, be.Key)%uint64(size-1)) + 1
		perms = append(perms, perm{
			x:      fraction(offset, size),
			step:   fraction(skip, size),
			offset: offset,
			skip:   skip,
			index:  i,
			weight: be.Weight,
		})
	}
	b.perms = perms
	if len(perms) == 0 {
		return dst, ErrNoBackends
	}
	if uint64(len(perms)) > uint64(size) {
		return dst, tooSmall(size, len(perms))
	}
	dst = slices.Grow(dst, int(size))[:size]
	words := int(size+63) / 64
	if hasClaim && !b.portable {
		// claim keeps a copy of slot s's bit at bit M+s.
		words = int(2*size+63) / 64
	}
	b.used = slices.Grow(b.used[:0], words)[:words]
	clear(b.used)
	b.fill(dst, perms, wmax)
	return dst, nil
}

// tailSlots is the number of free slots below which fill stops probing and
// searches the free list instead: probing then costs about M/free steps per
// slot, the search about free steps.
func tailSlots(m uint32) uint32 {
	t := uint32(1)
	for t*t < m {
		t++
	}
	return t
}

// fill runs the turns. The search of the free list in the tail gives the same
// slot as probing: every slot before a backend's next position x in its
// permutation is held, so its next free slot is the free slot earliest in its
// permutation.
func (b *Builder) fill(t []uint32, perms []perm, wmax uint32) {
	m := uint32(len(t))
	used := b.used
	free := m
	tail := min(tailSlots(m), m)
	n := len(perms)
	i := 0
	tu := &b.turns
	tu.start(perms, wmax, m)
	equal := tu.mode == equalTurns
	mm := uint64(m)
	sparse, dense := m*2/3, m/5
	if hasClaim && !b.portable {
		i = b.claimAll(t, perms, tail)
		free = tail
	}
	for free > tail {
		var p *perm
		if equal {
			p = &perms[i]
			if i++; i == n {
				i = 0
			}
		} else {
			p = &perms[tu.next()]
		}
		x, step := p.x, p.step
		if free > sparse {
			// Mostly the first probe is free: one probe per step.
			for {
				c, _ := bits.Mul64(x, mm)
				if used[c>>6]&(1<<(c&63)) == 0 {
					break
				}
				x += step
			}
		} else if free <= dense {
			// The same with 16 slots per step once 4/5 are held.
			for {
				c, _ := bits.Mul64(x, mm)
				held := used[c>>6] >> (c & 63) & 1
				y := x
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 1
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 2
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 3
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 4
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 5
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 6
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 7
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 8
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 9
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 10
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 11
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 12
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 13
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 14
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 15
				if held != 0xffff {
					x += uint64(bits.TrailingZeros64(^held)) * step
					break
				}
				x += 16 * step
			}
		} else {
			// Probe 8 slots per step without a branch per probe: a
			// branch on a coin flip is mispredicted half the time. One
			// slot after the other keeps few values live. (Measured:
			// narrower steps, loops and slot arrays are all slower.)
			for {
				c, _ := bits.Mul64(x, mm)
				held := used[c>>6] >> (c & 63) & 1
				y := x + step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 1
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 2
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 3
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 4
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 5
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 6
				y += step
				c, _ = bits.Mul64(y, mm)
				held |= used[c>>6] >> (c & 63) & 1 << 7
				if held != 255 {
					x += uint64(bits.TrailingZeros64(^held)) * step
					break
				}
				x += 8 * step
			}
		}
		c, _ := bits.Mul64(x, mm)
		used[c>>6] |= 1 << (c & 63)
		t[c] = p.index
		p.x = x + step
		free--
	}

	fs := b.free[:0]
	for w, word := range used[:(m+63)/64] {
		for x := ^word; x != 0; x &= x - 1 {
			s := uint32(w*64) + uint32(bits.TrailingZeros64(x))
			if s < m {
				fs = append(fs, s)
			}
		}
	}
	b.free = fs
	for len(fs) > 0 {
		var p *perm
		if equal {
			p = &perms[i]
			if i++; i == n {
				i = 0
			}
		} else {
			p = &perms[tu.next()]
		}
		if p.invX == 0 {
			// j = (slot - offset)·skip⁻¹ mod M, as a fraction like x:
			// ⌊((slot + M - offset)·invX mod 2^64)·M/2^64⌋, exact as the
			// error stays below 2M/2^64 of a turn.
			p.invX = fraction(modInverse(p.skip, m), m)
			p.invBase = uint64(m-p.offset) * p.invX
		}
		invX, base := p.invX, p.invBase
		best := 0
		if hasEarliest && !b.portable {
			best = earliest(fs, invX, base, m)
		} else {
			bestJ := uint64(m)
			for k, s := range fs {
				if j, _ := bits.Mul64(uint64(s)*invX+base, mm); j < bestJ {
					best, bestJ = k, j
				}
			}
		}
		t[fs[best]] = p.index
		fs[best] = fs[len(fs)-1]
		fs = fs[:len(fs)-1]
	}
}

// fraction returns ⌈v·2^64/m⌉ for v < m. Walking a permutation as x_j = x_0
// + j·step (mod 2^64) with x_0 = fraction(offset, m), step = fraction(skip,
// m) and reading slot ⌊x_j·m/2^64⌋ gives exactly (offset + j·skip) mod m: the
// rounding error after j < m steps is below (j+1)/2^64 of a turn, far less
// than the 1/m between slots for m < 2^32. One addition per step replaces the
// compare-and-subtract of modular stepping.
func fraction(v, m uint32) uint64 {
	q, r := bits.Div64(uint64(v), 0, uint64(m))
	if r != 0 {
		q++
	}
	return q
}

// modInverse returns a⁻¹ mod m for 0 < a < m, m prime (extended Euclid).
func modInverse(a, m uint32) uint32 {
	var t, newT int64 = 0, 1
	r, newR := int64(m), int64(a)
	for newR != 0 {
		q := r / newR
		t, newT = newT, t-q*newT
		r, newR = newR, r-q*newR
	}
	if t < 0 {
		t += int64(m)
	}
	return uint32(t)
}

// Disruption returns the fraction of slots whose owner (by Key) differs
// between table a over backends aSet and table b over bSet: the share of new
// connections that land elsewhere after the change. a and b must be tables
// built from aSet and bSet. Tables of different sizes share nothing (1); two
// empty tables differ in nothing (0).
func Disruption(a []uint32, aSet []Backend, b []uint32, bSet []Backend) float64 {
	if len(a) != len(b) {
		return 1
	}
	if len(a) == 0 {
		return 0
	}
	changed := 0
	for s := range a {
		if aSet[a[s]].Key != bSet[b[s]].Key {
			changed++
		}
	}
	return float64(changed) / float64(len(a))
}

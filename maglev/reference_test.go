package maglev

import (
	"math/bits"
	"slices"
	"strings"
)

// referenceBuild is a direct transcription of the table definition in the
// package comment, with a modulo per probe and no tail search: the optimised
// Builder must give exactly the same tables.
func referenceBuild(backends []Backend, m uint32) []uint32 {
	order := make([]int, len(backends))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return strings.Compare(backends[x].Key, backends[y].Key) })
	type state struct {
		index, weight int
		offset, skip  uint64
		next, credit  uint64
	}
	var ss []*state
	var wmax uint64
	for _, i := range order {
		if w := backends[i].Weight; w > 0 {
			ss = append(ss, &state{
				index:  i,
				weight: int(w),
				offset: sipHash(offsetSeed, backends[i].Key) % uint64(m),
				skip:   sipHash(skipSeed, backends[i].Key)%uint64(m-1) + 1,
			})
			wmax = max(wmax, uint64(w))
		}
	}
	if len(ss) == 0 {
		return nil
	}
	table := make([]int, m)
	for s := range table {
		table[s] = -1
	}
	filled := uint32(0)
	for filled < m {
		for _, s := range ss {
			s.credit += uint64(s.weight)
			if s.credit < wmax {
				continue
			}
			s.credit -= wmax
			c := (s.offset + s.next*s.skip) % uint64(m)
			for table[c] >= 0 {
				s.next++
				c = (s.offset + s.next*s.skip) % uint64(m)
			}
			table[c] = s.index
			s.next++
			if filled++; filled == m {
				break
			}
		}
	}
	out := make([]uint32, m)
	for s, i := range table {
		out[s] = uint32(i)
	}
	return out
}

func mulHi(a, b uint64) uint64 {
	hi, _ := bits.Mul64(a, b)
	return hi
}

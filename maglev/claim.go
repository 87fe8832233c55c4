package maglev

import "slices"

// walk is a backend's permutation for claim, stepped by slot rather than by
// fraction (see perm): the slot after s is s + skip mod M, one compare-and-
// subtract as both are below M. Lane k of a probe is s + lanes[k] mod M, the
// k-th slot after s, as lanes[k] = k·skip mod M; after the 8 lanes the walk
// goes on from s + skip8 mod M. So claim probes exactly the permutation's
// slots in permutation order, and gives the same table as probing in fill.
// (claim reads lane k at s + lanes[k] < 2M in a bitset that holds a copy of
// slot s's bit at M+s, and reduces only the slot it claims.)
type walk struct {
	lanes [8]uint32
	slot  uint32 // next slot to probe
	skip8 uint32 // 8·skip mod M
	skip  uint32
	index uint32 // position in the input
}

// batchTurns is the number of turns handed to claim at once.
const batchTurns = 256

// claimAll takes the turns until tail slots are free with claim, handing it
// the turn order batch by batch, and returns the next equal-turns position
// (see fill).
func (b *Builder) claimAll(t []uint32, perms []perm, tail uint32) int {
	m := uint32(len(t))
	ws := slices.Grow(b.walks[:0], len(perms))[:len(perms)]
	for k := range perms {
		p, w := &perms[k], &ws[k]
		w.slot, w.skip, w.index = p.offset, p.skip, p.index
		l := uint32(0)
		for j := range w.lanes {
			w.lanes[j] = l
			if l += p.skip; l >= m {
				l -= m
			}
		}
		w.skip8 = l
	}
	b.walks = ws
	tu := &b.turns
	n, i := len(perms), 0
	// With equal weights the turn order repeats 0, 1, …, N-1: batch holds
	// it from every start, and a batch is a window of it.
	size := batchTurns
	if tu.mode == equalTurns {
		size += n
	}
	batch := slices.Grow(b.batch[:0], size)[:size]
	b.batch = batch
	if tu.mode == equalTurns {
		for k := range batch {
			batch[k] = uint32(k % n)
		}
	}
	// Probe 1 slot per turn (then 8 at a time) while over 2/3 of the table
	// is free and the first usually is; 4 at a time while over 2/5 is free
	// (measured best; 8 then probes more than needed); 8 after.
	for free := m; free > tail; {
		c := min(free-tail, batchTurns)
		width := uint32(8)
		switch {
		case free > m*2/3:
			width, c = 1, min(c, free-m*2/3)
		case free > m*2/5:
			width, c = 4, min(c, free-m*2/5)
		}
		turns := batch[:c]
		if tu.mode == equalTurns {
			turns = batch[i : i+int(c)]
			i = (i + int(c)) % n
		} else {
			for k := range turns {
				turns[k] = uint32(tu.next())
			}
		}
		claim(&b.used[0], &t[0], &ws[0], turns, m, width)
		free -= c
	}
	return i
}

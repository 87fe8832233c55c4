package maglev

// Turn order. In round r = 1, 2, … every backend, in Key order, adds its
// weight w to its credit and, when the credit reaches the largest weight W,
// takes a turn and pays W. As w ≤ W that is at most one turn per round, and
// a backend's k-th turn falls in round ⌈k·W/w⌉. Three ways to produce the
// same sequence:
//   - equal weights: every backend every round (fill does this inline);
//   - credit: the rule above, visiting every backend every round, cheap when
//     rounds hold many turns;
//   - heap: backends ordered by (round of their next turn, Key order), which
//     skips the visits that take no turn; used when weights are so uneven that
//     the credit walk would visit several backends per turn.
const (
	equalTurns = iota
	creditTurns
	heapTurns
)

// turns yields the backends in turn order.
type turns struct {
	mode  int
	perms []perm
	wmax  uint64
	i     int        // creditTurns: next backend to visit
	heap  []nextTurn // heapTurns: min-heap by (round, k)
}

type nextTurn struct {
	round uint64 // the round of the backend's next turn
	k     uint32 // its index in perms (Key order)
}

// start picks the mode for a build of m slots.
func (tu *turns) start(perms []perm, wmax, m uint32) {
	tu.perms, tu.wmax, tu.i = perms, uint64(wmax), 0
	var sum float64
	tu.mode = equalTurns
	for k := range perms {
		perms[k].credit = 0
		sum += float64(perms[k].weight)
		if perms[k].weight != wmax {
			tu.mode = creditTurns
		}
	}
	if tu.mode == equalTurns {
		return
	}
	// The credit walk visits N backends per round, over about M·W/Σw
	// rounds, for M turns.
	if visits := float64(len(perms)) * float64(m) * float64(wmax) / sum; visits <= 4*float64(m) {
		return
	}
	tu.mode = heapTurns
	h := tu.heap[:0]
	for k := range perms {
		// perms[k].credit counts turns taken in this mode.
		h = append(h, nextTurn{round: tu.roundOf(1, perms[k].weight), k: uint32(k)})
	}
	tu.heap = h
	for j := len(h)/2 - 1; j >= 0; j-- {
		tu.down(j)
	}
}

// roundOf returns the round of a backend's turn-th turn, ⌈turn·W/w⌉; turn ≤
// MaxSize and W < 2^32, so the product fits.
func (tu *turns) roundOf(turn uint64, w uint32) uint64 {
	return (turn*tu.wmax + uint64(w) - 1) / uint64(w)
}

// next returns the index in perms of the backend whose turn it is (modes
// credit and heap).
func (tu *turns) next() int {
	if tu.mode == creditTurns {
		for {
			k := tu.i
			p := &tu.perms[k]
			if tu.i++; tu.i == len(tu.perms) {
				tu.i = 0
			}
			p.credit += uint64(p.weight)
			if p.credit >= tu.wmax {
				p.credit -= tu.wmax
				return k
			}
		}
	}
	top := &tu.heap[0]
	k := int(top.k)
	p := &tu.perms[k]
	p.credit++
	top.round = tu.roundOf(p.credit+1, p.weight)
	tu.down(0)
	return k
}

func (tu *turns) less(a, b int) bool {
	x, y := &tu.heap[a], &tu.heap[b]
	return x.round < y.round || x.round == y.round && x.k < y.k
}

// down restores the heap order below j.
func (tu *turns) down(j int) {
	h := tu.heap
	for {
		c := 2*j + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && tu.less(c+1, c) {
			c++
		}
		if !tu.less(c, j) {
			return
		}
		h[j], h[c] = h[c], h[j]
		j = c
	}
}

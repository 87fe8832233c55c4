package healthd

import (
	"net/netip"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
)

// dpState is what the daemon has written to the datapath, so a reconcile
// writes only differences and in the right order.
type dpState struct {
	vips      map[api.VIPKey]*dpVIP
	vipIDs    idAlloc
	backendID idAlloc
	tables    map[string]*tableData      // by key (size, backends, weights), shared by VIPs
	unused    []*tableData               // tables in tables no VIP uses, oldest first
	moves     map[[2]*tableData][]uint32 // moved slots by pair (old, new), in one reconcile
	keyBuf    []byte                     // planTable's scratch

	// Scratch of reconcileLocked, kept between reconciles.
	healthyBuf  []bool
	memberArena arena[*Backend]
	idArena     arena[uint32]
}

// arena hands out slices of chunks reused by every reconcile: a slice taken
// is valid until the next reset.
type arena[T any] struct {
	chunks [][]T
	cur    int // chunk being filled
	used   int // of chunks[cur]
}

const arenaChunk = 1 << 14

// take returns an empty slice with room for n elements.
func (a *arena[T]) take(n int) []T {
	if n > arenaChunk {
		return make([]T, 0, n)
	}
	if len(a.chunks) > 0 && a.used+n > arenaChunk {
		a.cur, a.used = a.cur+1, 0
	}
	if a.cur == len(a.chunks) {
		a.chunks = append(a.chunks, make([]T, arenaChunk))
	}
	s := a.chunks[a.cur][a.used : a.used : a.used+n]
	a.used += n
	return s
}

// reset makes every chunk reusable; slices taken before must not be used
// any more.
func (a *arena[T]) reset() {
	for _, c := range a.chunks[:min(a.cur+1, len(a.chunks))] {
		clear(c) // drop pointers into the old state
	}
	a.cur, a.used = 0, 0
}

type dpVIP struct {
	id        uint32
	vip       loader.VIP
	written   bool // PutVIP done
	tableKey  string
	table     bool // a table was installed
	panic     bool
	healthy   int // active backends that are healthy
	active    int
	backends  map[netip.Addr]*dpBackend
	installed *tableData   // the table installed, for its slot counts; nil when adopted
	order     []*dpBackend // backends in the order of orderOf.Backends (prepareVIP)
	orderOf   *VIP
	checks    []*healthInfo // health of each of order; nil: no check running
	// memo holds, per position of orderOf.Backends, what the last
	// reconcile decided; when that reconcile wrote everything (memoOK),
	// with the same next hops (memoHop) and panic state, the next one
	// reads only the backends whose health changed: a flip of a backend
	// in 1,000 VIPs does not walk the 99,000 others.
	memo    []backendMemo
	memoOK  bool
	memoHop uint64
	err     string // why the VIP is not (fully) installed
}

type backendMemo struct {
	unchecked, active bool // of the desired backend (no check; admin state active)
	healthy           bool // as the reconcile saw it
	usableNew         bool // a table member
	id                uint32
}

type dpBackend struct {
	id      uint32
	b       loader.Backend
	written bool
	err     string // e.g. next hop unresolved
	sample  *sample
	hop     nextHopCache
}

func newDPState(maxVIPs, maxBackends uint32) dpState {
	if maxVIPs == 0 {
		maxVIPs = loader.MaxVIPs
	}
	if maxBackends == 0 {
		maxBackends = loader.MaxBackends
	}
	return dpState{
		vips:      map[api.VIPKey]*dpVIP{},
		vipIDs:    idAlloc{first: 0, limit: maxVIPs, used: map[uint32]bool{}},
		backendID: idAlloc{first: 1, limit: maxBackends, used: map[uint32]bool{}},
		tables:    map[string]*tableData{},
		moves:     map[[2]*tableData][]uint32{},
	}
}

func (s *dpState) sampleOf(k api.VIPKey, a netip.Addr) *sample {
	if v := s.vips[k]; v != nil {
		if b := v.backends[a]; b != nil {
			return b.sample
		}
	}
	return nil
}

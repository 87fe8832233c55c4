package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// Memory bound of a table: each key is a 64-bit hash of its parts (never the
// parts themselves, so a huge header costs no more than a short one) mapped
// to one int64, in Go maps of at most maxKeys/shards entries each. A Go map
// of 16-byte slots holds at most bytesPerKey bytes per entry once grown
// (slots plus control bytes at the lowest load factor after a doubling);
// TestTableMillionKeys measures it.
const (
	shards      = 256
	bytesPerKey = 48
	// evictSample is how many entries a full shard looks at to choose the
	// one to drop: the one closest to expiry among them (an expired one at
	// once). Dropping a live key forgets its debt, so it is counted.
	evictSample = 8
)

// table holds one int64 per key hash, sharded by the hash's low bits, each
// shard bounded. What the value means belongs to the caller (a TAT for the
// local limiter, a lease for the Redis one); expiry reads it through
// expired.
type table struct {
	shards   [shards]shard
	perShard int
	// expired reports that a value at now no longer carries state.
	expired func(v, now int64) bool

	evictions   atomic.Uint64
	longestHold atomic.Int64 // ns, longest a sweep held one shard's lock
}

type shard struct {
	mu   sync.Mutex
	m    map[uint64]int64
	peak int
	_    [40]byte // keep shards on separate cache lines
}

func newTable(maxKeys int, expired func(v, now int64) bool) *table {
	t := &table{perShard: max(1, maxKeys/shards), expired: expired}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]int64)
	}
	return t
}

func (t *table) shard(h uint64) *shard { return &t.shards[h%shards] }

// update runs f on the value of key h (0 and false when absent) under the
// shard's lock and stores what it returns; keep false deletes the key.
// f must be short: it runs under a lock shared by 1/256 of the keys.
func (t *table) update(h uint64, now int64, f func(v int64, found bool) (nv int64, keep bool)) {
	s := t.shard(h)
	s.mu.Lock()
	v, found := s.m[h]
	nv, keep := f(v, found)
	switch {
	case !keep:
		if found {
			delete(s.m, h)
		}
	case found:
		s.m[h] = nv
	default:
		if len(s.m) >= t.perShard {
			t.evict(s, now)
		}
		s.m[h] = nv
		if len(s.m) > s.peak {
			s.peak = len(s.m)
		}
	}
	s.mu.Unlock()
}

// evict drops one entry of a full shard: the first expired one among
// evictSample, else the one of them with the smallest value (closest to
// expiry for both users of the table).
func (t *table) evict(s *shard, now int64) {
	var victim uint64
	var low int64
	n := 0
	for k, v := range s.m {
		if t.expired(v, now) {
			delete(s.m, k)
			return
		}
		if n == 0 || v < low {
			victim, low = k, v
		}
		if n++; n == evictSample {
			break
		}
	}
	if n > 0 {
		delete(s.m, victim)
		t.evictions.Add(1)
	}
}

// sweep deletes expired entries, one shard at a time, so that no lock is
// held for more than one shard's entries (at most maxKeys/256). A shard that
// fell below a quarter of its peak is copied into a smaller map, because Go
// maps never give memory back on delete.
func (t *table) sweep(now int64) {
	for i := range t.shards {
		start := time.Now()
		t.sweepShard(i, now)
		if d := int64(time.Since(start)); d > t.longestHold.Load() {
			t.longestHold.Store(d)
		}
	}
}

func (t *table) sweepShard(i int, now int64) {
	s := &t.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if t.expired(v, now) {
			delete(s.m, k)
		}
	}
	if s.peak > 1024 && len(s.m) < s.peak/4 {
		m := make(map[uint64]int64, len(s.m))
		for k, v := range s.m {
			m[k] = v
		}
		s.m, s.peak = m, len(m)
	}
}

// len counts the keys (locking each shard in turn).
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

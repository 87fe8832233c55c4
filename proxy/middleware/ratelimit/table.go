package ratelimit

import (
	"iter"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Memory bound of a table: each key is a 64-bit hash of its parts (never the
// parts themselves, so a huge header costs no more than a short one) mapped
// to one int64, in Go maps of at most maxShardKeys entries each. A Go map
// of 16-byte slots holds at most bytesPerKey bytes per entry once grown
// (slots plus control bytes at the lowest load factor after a doubling);
// TestTableMillionKeys measures it.
//
// Pauses: no lock is held while more than sweepStep keys are looked at, or
// more than maxShardKeys/4 copied (a shard's compaction), and a shard's map
// never holds more than maxShardKeys, so its growth (Go maps grow one table
// of at most 1024 slots at a time) copies at most that many.
// BenchmarkMillionKeys measures the longest wait of a request meanwhile.
const (
	minShards    = 256
	maxShardKeys = 4096
	bytesPerKey  = 48
	// sweepStep is how many keys a sweep looks at per hold of a shard's
	// lock; it then lets the requests waiting for the shard in.
	sweepStep = 256
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
	shards   []shard // a power of two of them
	mask     uint64
	perShard int
	// expired reports that a value at now no longer carries state.
	expired func(v, now int64) bool

	evictions   atomic.Uint64
	longestHold atomic.Int64 // ns, longest a sweep held a shard's lock
	// betweenSteps, when set (tests), runs after each step of a sweep,
	// with no lock held; held is how long the step held the lock.
	betweenSteps func(s *shard, held time.Duration)
}

type shard struct {
	mu   sync.Mutex
	m    map[uint64]int64
	peak int
	_    [40]byte // keep shards on separate cache lines
}

// shardsFor is the number of shards for maxKeys: at least minShards, and
// enough that none holds more than maxShardKeys.
func shardsFor(maxKeys int) int {
	n := minShards
	for n*maxShardKeys < maxKeys {
		n *= 2
	}
	return n
}

func newTable(maxKeys int, expired func(v, now int64) bool) *table {
	n := shardsFor(maxKeys)
	t := &table{shards: make([]shard, n), mask: uint64(n - 1), perShard: max(1, maxKeys/n), expired: expired}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]int64)
	}
	return t
}

func (t *table) shard(h uint64) *shard { return &t.shards[h&t.mask] }

// update runs f on the value of key h (0 and false when absent) under the
// shard's lock and stores what it returns; keep false deletes the key.
// f must be short: it runs under a lock shared by 1/len(shards) of the keys.
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

// sweep deletes the entries expired at now, shard by shard.
func (t *table) sweep(now int64) {
	for i := range t.shards {
		t.sweepShard(&t.shards[i], now)
	}
}

// sweepShard walks one shard in steps of sweepStep keys, releasing the
// lock between steps: one iterator over the map (iter.Pull) survives the
// inserts and deletes other goroutines make in between, and Go's iteration
// rules say every key present for the whole walk is seen once. A shard
// that fell below a quarter of its peak is then copied into a smaller map,
// because Go maps never give memory back on delete.
func (t *table) sweepShard(s *shard, now int64) {
	s.mu.Lock()
	if len(s.m) == 0 && s.peak <= 1024 {
		s.mu.Unlock()
		return
	}
	next, stop := iter.Pull2(maps.All(s.m))
	for {
		start := time.Now()
		done := true
		for range sweepStep {
			k, v, ok := next()
			if !ok {
				break
			}
			if t.expired(v, now) {
				delete(s.m, k)
			}
			done = false
		}
		if done {
			break
		}
		held := time.Since(start)
		t.noteHold(held)
		s.mu.Unlock()
		if t.betweenSteps != nil {
			t.betweenSteps(s, held)
		}
		runtime.Gosched() // a request woken by the unlock gets the shard first
		s.mu.Lock()
	}
	stop()
	if s.peak > 1024 && len(s.m) < s.peak/4 {
		start := time.Now()
		m := make(map[uint64]int64, len(s.m))
		for k, v := range s.m {
			m[k] = v
		}
		s.m, s.peak = m, len(m)
		t.noteHold(time.Since(start))
	}
	s.mu.Unlock()
}

func (t *table) noteHold(d time.Duration) {
	if int64(d) > t.longestHold.Load() {
		t.longestHold.Store(int64(d))
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

package maglev

import (
	"container/list"
	"encoding/binary"
	"sync"
)

// DefaultCacheEntries is the capacity NewCache uses for maxEntries ≤ 0.
const DefaultCacheEntries = 64

// Cache remembers recently built tables so that many VIPs sharing one backend
// set build it once. Entries are keyed by the exact input, (Key, Weight) pairs
// in input order and size, because a table holds input positions; callers
// that list a shared set in the same order share its table. Concurrent
// requests for a missing table wait for a single build. The least recently
// used entry is dropped beyond the capacity. Failed builds are not kept.
// A Cache is safe for concurrent use.
type Cache struct {
	max      int
	builders sync.Pool // *Builder, scratch space for builds

	mu      sync.Mutex
	entries map[string]*list.Element // of *cacheEntry
	lru     list.List                // front: most recently used
	hits    uint64
	misses  uint64
}

type cacheEntry struct {
	key   string
	done  chan struct{} // closed when table and err are set
	table []uint32
	err   error
}

// NewCache returns an empty cache holding at most maxEntries tables
// (DefaultCacheEntries if maxEntries ≤ 0).
func NewCache(maxEntries int) *Cache {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	return &Cache{
		max:      maxEntries,
		entries:  make(map[string]*list.Element),
		builders: sync.Pool{New: func() any { return NewBuilder() }},
	}
}

// Build returns what the package function Build returns for the same
// arguments, from the cache when it can. The table is shared: callers must
// not modify it.
func (c *Cache) Build(backends []Backend, size uint32) ([]uint32, error) {
	key := cacheKey(backends, size)
	c.mu.Lock()
	if el, ok := c.entries[key]; ok {
		c.hits++
		c.lru.MoveToFront(el)
		e := el.Value.(*cacheEntry)
		c.mu.Unlock()
		<-e.done
		return e.table, e.err
	}
	c.misses++
	e := &cacheEntry{key: key, done: make(chan struct{})}
	c.entries[key] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		c.evict(c.lru.Back())
	}
	c.mu.Unlock()

	b := c.builders.Get().(*Builder)
	e.table, e.err = b.Build(nil, backends, size)
	c.builders.Put(b)
	close(e.done)
	if e.err != nil {
		c.mu.Lock()
		if el, ok := c.entries[key]; ok && el.Value == e {
			c.evict(el)
		}
		c.mu.Unlock()
	}
	return e.table, e.err
}

// evict drops an entry; c.mu must be held. Goroutines already waiting on the
// entry still get its result.
func (c *Cache) evict(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry).key)
	c.lru.Remove(el)
}

// Stats returns how many Build calls found their table in the cache (or
// waited for a build in progress) and how many started a build.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

// Len returns the number of tables held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// cacheKey encodes the input unambiguously: size, then per backend the Key
// length, the Key and the weight.
func cacheKey(backends []Backend, size uint32) string {
	n := 4
	for i := range backends {
		n += binary.MaxVarintLen64 + len(backends[i].Key) + 4
	}
	buf := make([]byte, 0, n)
	buf = binary.LittleEndian.AppendUint32(buf, size)
	for i := range backends {
		buf = binary.AppendUvarint(buf, uint64(len(backends[i].Key)))
		buf = append(buf, backends[i].Key...)
		buf = binary.LittleEndian.AppendUint32(buf, backends[i].Weight)
	}
	return string(buf)
}

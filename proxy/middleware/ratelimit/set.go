package ratelimit

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// SweepInterval is how often a Set drops idle keys.
const SweepInterval = 10 * time.Second

// Set holds a proxy's limits across reloads: a limit that keeps its
// identity (route, name, max_keys and Redis server) keeps its buckets, so a
// reload does not hand every client a fresh burst. It sweeps idle keys in
// the background until Close.
type Set struct {
	metrics *Metrics
	log     *slog.Logger

	mu     sync.Mutex
	states map[string]*state
	stop   chan struct{}
	done   chan struct{}
}

// NewSet starts a set; m may be nil (metrics are then not exported).
func NewSet(log *slog.Logger, m *Metrics) *Set {
	if m == nil {
		m = NewMetrics()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Set{metrics: m, log: log, states: map[string]*state{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.tables.set = s
	go s.sweepLoop()
	return s
}

func identity(route string, c *Config) string {
	if c.Global {
		route = "" // no route name is empty
	}
	id := fmt.Sprintf("%q %q %d", route, c.Name, c.MaxKeys)
	if r := c.Redis; r != nil {
		id += fmt.Sprintf(" redis %q %d %q", r.Address, r.DB, r.Prefix)
	}
	return id
}

// Limiter returns the limiter of c on a route, reusing the state of the
// same limit from the running config. A state is closed (its Redis client
// with it) once no limiter uses it: when the configs that had it are
// garbage, which needs no call from the proxy on reload.
func (s *Set) Limiter(c *Config, opts Options) *Limiter {
	id := identity(opts.Route, c)
	s.mu.Lock()
	st, ok := s.states[id]
	if !ok {
		st = newState(c)
		st.id, st.name = id, c.Name
		if !c.Global {
			st.route = opts.Route
		}
		s.states[id] = st
	}
	st.refs++
	s.mu.Unlock()
	if opts.Logger == nil {
		opts.Logger = s.log
	}
	l := newLimiter(c, st, opts, s.metrics.counters(opts.Route, c.Name))
	runtime.AddCleanup(l, s.release, st)
	return l
}

func (s *Set) release(st *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.refs--; st.refs == 0 && s.states[st.id] == st {
		st.close()
		delete(s.states, st.id)
	}
}

// Close stops the sweeper and closes every Redis client.
func (s *Set) Close() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range s.states {
		st.close()
		delete(s.states, id)
	}
}

// limits is the number of limit states held (for tests).
func (s *Set) limits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.states)
}

func (s *Set) sweepLoop() {
	defer close(s.done)
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sweep()
		}
	}
}

func (s *Set) snapshot() []*state {
	s.mu.Lock()
	defer s.mu.Unlock()
	sts := make([]*state, 0, len(s.states))
	for _, st := range s.states {
		sts = append(sts, st)
	}
	return sts
}

func (s *Set) sweep() {
	for _, st := range s.snapshot() {
		now := monoNow()
		st.local.sweep(now)
		if st.redis != nil {
			st.redis.leases.sweep(now)
		}
	}
}

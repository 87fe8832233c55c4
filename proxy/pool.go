package proxy

import (
	"fmt"
	"sync/atomic"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/proxy/balance"
)

// backend is one member of a pool with the state that survives reloads:
// the balancer's accounting, the admin drain flag and the health state.
type backend struct {
	*balance.Backend
	pool    string
	drained atomic.Bool
	// health holds a check.State. A backend of a pool without active checks
	// is Healthy from the start; one with checks starts Unknown (or Healthy
	// with start_healthy) before it is published, so its health is defined
	// before the first check completes.
	health  atomic.Uint32
	// spec is the active check; nil: none. Atomic: a reload sets it on a
	// backend that serves requests.
	spec    atomic.Pointer[check.Spec]
	metrics *backendMetrics // set before the backend is published
}

// healthID is the check.Prober target ID of a backend.
func (b *backend) healthID() string { return b.pool + "/" + b.ID }

// usable reports whether the backend may take a new request.
func (b *backend) usable() bool {
	return !b.drained.Load() && check.State(b.health.Load()) == check.Healthy
}

func (b *backend) healthState() check.State { return check.State(b.health.Load()) }

// pool is a compiled PoolConfig: its backends and the picker over them.
type pool struct {
	name     string
	alg      balance.Algorithm
	key      balance.KeySource
	hashed   bool // the picker uses the key
	picker   balance.Picker
	backends []*backend
	byBal    map[*balance.Backend]*backend
	// isUsable is p.usable as a method value, made once so Pick gets no
	// per-request closure.
	isUsable func(*balance.Backend) bool
}

func (p *pool) usable(b *balance.Backend) bool {
	be := p.byBal[b]
	return be != nil && be.usable()
}

// find returns the backend with the address, or nil.
func (p *pool) find(addr string) *backend {
	for _, b := range p.backends {
		if b.ID == addr {
			return b
		}
	}
	return nil
}

// buildPool compiles pc, taking the backends that already exist (same pool,
// address and weight) from old so their accounting, drain flag and health
// carry over. New backends are added to old.
func buildPool(pc *PoolConfig, old map[string]*backend, m *metrics) (*pool, error) {
	alg, err := balance.ParseAlgorithm(pc.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	key, err := balance.ParseKeySource(pc.HashKey)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	p := &pool{
		name:   pc.Name,
		alg:    alg,
		key:    key,
		hashed: alg == balance.ConsistentHash,
		byBal:  make(map[*balance.Backend]*backend, len(pc.Backends)),
	}
	p.isUsable = p.usable
	list := make([]*balance.Backend, 0, len(pc.Backends))
	for _, bc := range pc.Backends {
		id := pc.Name + "/" + bc.Address
		var spec *check.Spec
		if pc.HealthCheck != nil {
			s := pc.HealthCheck.spec(bc.Address)
			spec = &s
		}
		b := old[id]
		if b == nil || b.Weight != bc.Weight {
			nb := &backend{Backend: balance.NewBackend(bc.Address, bc.Weight), pool: pc.Name}
			switch {
			case b != nil && (spec != nil) == (b.spec.Load() != nil):
				nb.health.Store(b.health.Load())
				nb.drained.Store(b.drained.Load())
			case spec == nil || spec.StartHealthy:
				nb.health.Store(uint32(check.Healthy))
			default:
				nb.health.Store(uint32(check.Unknown))
			}
			b = nb
		} else if (spec != nil) != (b.spec.Load() != nil) {
			// Checks switched on or off: the health starts over, on a copy
			// so the running config is not changed before the swap.
			nb := &backend{Backend: b.Backend, pool: pc.Name}
			nb.drained.Store(b.drained.Load())
			if spec == nil || spec.StartHealthy {
				nb.health.Store(uint32(check.Healthy))
			} else {
				nb.health.Store(uint32(check.Unknown))
			}
			b = nb
		}
		b.spec.Store(spec)
		if b.metrics == nil {
			b.metrics = m.backend(pc.Name, bc.Address)
		}
		p.backends = append(p.backends, b)
		p.byBal[b.Backend] = b
		list = append(list, b.Backend)
	}
	p.picker, err = balance.New(alg, list, balance.Options{LoadFactor: pc.LoadFactor})
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	return p, nil
}

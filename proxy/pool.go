package proxy

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/proxy/balance"
	"github.com/xlb-project/xlb/proxy/breaker"
	"github.com/xlb-project/xlb/proxy/discovery"
	"github.com/xlb-project/xlb/proxy/outlier"
	"github.com/xlb-project/xlb/proxy/sticky"

	"github.com/xlb-project/xlb/proxy/config"
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
	health atomic.Uint32
	// spec is the active check; nil: none. Atomic: a reload sets it on a
	// backend that serves requests.
	spec    atomic.Pointer[check.Spec]
	metrics *backendMetrics // set before the backend is published
	// breaker is the backend's circuit breaker (nil: none), made for
	// breakerCfg; atomic: a reload sets them on a backend in service.
	breaker    atomic.Pointer[breaker.Breaker]
	breakerCfg atomic.Pointer[config.BreakerConfig]
}

// healthID is the check.Prober target ID of a backend.
func (b *backend) healthID() string { return b.pool + "/" + b.ID }

func (b *backend) healthState() check.State { return check.State(b.health.Load()) }

// pool is a compiled PoolConfig. Its members change on reload and, for
// discovered pools, whenever the source answers with a different list.
type pool struct {
	name     string
	cfg      config.PoolConfig
	key      balance.KeySource
	hashed   bool // the picker uses the key
	members  atomic.Pointer[members]
	detector *outlier.Detector // nil: no passive ejection
	sticky   *stickyPolicy     // nil: no cookie affinity
	guard    guard             // breakers, load shedding, slow start
}

// members is one membership of a pool and the picker over it.
type members struct {
	pool     *pool
	backends []*backend
	byBal    map[*balance.Backend]*backend
	byID     map[string]*backend
	picker   balance.Picker
	// isUsable is m.usable as a method value, made once so Pick gets no
	// per-request closure.
	isUsable func(*balance.Backend) bool
}

type stickyPolicy struct {
	codec  *sticky.Codec
	cookie sticky.Config
}

// usable reports whether a backend may take a new request: not drained,
// healthy, not ejected by outlier detection and not behind an open breaker.
func (m *members) usable(bb *balance.Backend) bool {
	b := m.byBal[bb]
	if b == nil || b.drained.Load() || check.State(b.health.Load()) != check.Healthy {
		return false
	}
	if d := m.pool.detector; d != nil && d.Ejected(b.ID, time.Now()) {
		return false
	}
	if br := b.breaker.Load(); br != nil && !br.Usable(time.Now()) {
		return false
	}
	return true
}

// find returns the backend with the address, or nil.
func (p *pool) find(addr string) *backend {
	return p.members.Load().byID[addr]
}

// pick chooses a backend for r: the one its valid sticky cookie names if
// usable, else the picker's choice (and then the cookie is set).
func (p *pool) pick(w http.ResponseWriter, r *http.Request, e *exchange) *backend {
	m := p.members.Load()
	if sp := p.sticky; sp != nil {
		now := time.Now()
		if v := sp.cookie.Value(r); v != "" {
			if id, ok := sp.codec.Decode(v, now); ok {
				if b := m.byID[id]; b != nil && m.usable(b.Backend) {
					return b
				}
			}
		}
		b := p.pickFrom(m, r, e)
		if b != nil {
			http.SetCookie(w, sp.cookie.Cookie(sp.codec.Encode(b.ID, now)))
		}
		return b
	}
	return p.pickFrom(m, r, e)
}

func (p *pool) pickFrom(m *members, r *http.Request, e *exchange) *backend {
	var key uint64
	if p.hashed {
		key = p.key.Key(r, e.client)
	}
	bb := m.picker.Pick(key, m.isUsable)
	if bb == nil {
		return nil
	}
	return m.byBal[bb]
}

// report tells outlier detection how a request to b went.
func (p *pool) report(b *backend, failed bool) {
	if p.detector != nil {
		p.detector.Report(b.ID, failed, time.Now())
	}
}

// buildPool compiles pc. targets are the backends to use (from pc.Backends
// or discovery). Backends that already exist in reg (same pool, address and
// weight) are reused so their accounting, drain flag and health carry over.
// old is the pool of the same name in the running state, or nil. Changes to
// shared objects go to pending (see buildMembers).
func (p *Proxy) buildPool(pc *config.PoolConfig, targets []discovery.Target, old *pool, pending *[]func()) (*pool, error) {
	alg, err := balance.ParseAlgorithm(pc.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	key, err := balance.ParseKeySource(pc.HashKey)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	pl := &pool{name: pc.Name, cfg: *pc, key: key, hashed: alg == balance.ConsistentHash}
	if pl.guard, err = p.buildGuard(pc, old); err != nil {
		return nil, err
	}
	if pc.Outlier != nil {
		if old != nil && old.detector != nil && *old.cfg.Outlier == *pc.Outlier {
			pl.detector = old.detector
		} else {
			name := pc.Name
			pl.detector, err = outlier.New(pc.Outlier.Outlier(func(ev outlier.Event) { p.onOutlierEvent(name, ev) }), nil)
			if err != nil {
				return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
			}
		}
	}
	if pc.Sticky != nil {
		codec, err := pc.Sticky.Codec()
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
		}
		pl.sticky = &stickyPolicy{codec: codec, cookie: pc.Sticky.Cookie()}
	}
	m, err := p.buildMembers(pl, alg, targets, old != nil, pending)
	if err != nil {
		return nil, err
	}
	pl.members.Store(m)
	return pl, nil
}

// buildMembers compiles the membership of pl from targets; ramp says the pool
// was running, so that a backend new to it starts its slow start. What it
// would change on backends and detectors the running state shares (check
// specs, breakers, outlier membership, metric series) it appends to pending
// instead, to be run when the result is installed: a config that fails later
// changes nothing.
func (p *Proxy) buildMembers(pl *pool, alg balance.Algorithm, targets []discovery.Target, ramp bool, pending *[]func()) (*members, error) {
	pc := &pl.cfg
	m := &members{
		pool:  pl,
		byBal: make(map[*balance.Backend]*backend, len(targets)),
		byID:  make(map[string]*backend, len(targets)),
	}
	m.isUsable = m.usable
	list := make([]*balance.Backend, 0, len(targets))
	ids := make([]string, 0, len(targets))
	for _, t := range targets {
		var spec *check.Spec
		if pc.HealthCheck != nil {
			s := pc.HealthCheck.Spec(t.Addr)
			spec = &s
		}
		b := p.backends[pc.Name+"/"+t.Addr]
		prev := b
		checksChanged := b != nil && (spec != nil) != (b.spec.Load() != nil)
		if b == nil || b.Weight != t.Weight || checksChanged {
			nb := &backend{Backend: balance.NewBackend(t.Addr, t.Weight), pool: pc.Name}
			if b != nil && b.Weight == t.Weight {
				nb.Backend = b.Backend // keep the accounting
			}
			switch {
			case b != nil && !checksChanged:
				nb.health.Store(b.health.Load())
				nb.drained.Store(b.drained.Load())
				nb.metrics = b.metrics
			case b != nil:
				nb.drained.Store(b.drained.Load())
				nb.metrics = b.metrics
				fallthrough
			default:
				if spec == nil || spec.StartHealthy {
					nb.health.Store(uint32(check.Healthy))
				} else {
					nb.health.Store(uint32(check.Unknown))
				}
			}
			b = nb
		}
		bb, poolName, addr := b, pc.Name, t.Addr
		br, brCfg, rampNew := p.backendBreaker(pl, b, prev), pl.guard.beCfg, prev == nil && ramp
		*pending = append(*pending, func() {
			bb.spec.Store(spec)
			bb.breaker.Store(br)
			bb.breakerCfg.Store(brCfg)
			if rampNew {
				bb.StartRamp(time.Now(), pl.guard.slow)
			}
			if bb.metrics == nil {
				bb.metrics = p.metrics.backend(poolName, addr)
			}
		})
		m.backends = append(m.backends, b)
		m.byBal[b.Backend] = b
		m.byID[b.ID] = b
		list = append(list, b.Backend)
		ids = append(ids, b.ID)
	}
	var err error
	m.picker, err = balance.New(alg, list, balance.Options{LoadFactor: pc.LoadFactor})
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	if d := pl.detector; d != nil {
		*pending = append(*pending, func() { d.SetBackends(ids) })
	}
	return m, nil
}

func (p *Proxy) onOutlierEvent(poolName string, ev outlier.Event) {
	switch ev.Kind {
	case outlier.Ejected:
		p.metrics.beEjections.WithLabelValues(poolName, ev.Backend).Inc()
		p.log.Warn("backend ejected", "pool", poolName, "backend", ev.Backend, "until", ev.Until, "ejections", ev.Ejections)
	case outlier.Returned:
		p.log.Info("backend returned from ejection", "pool", poolName, "backend", ev.Backend)
		p.rampBackend(poolName, ev.Backend)
	case outlier.Refused:
		p.log.Warn("backend not ejected: too many of the pool are", "pool", poolName, "backend", ev.Backend)
	}
}

// staticTargets turns the configured backends into targets.
func staticTargets(pc *config.PoolConfig) []discovery.Target {
	out := make([]discovery.Target, len(pc.Backends))
	for i, b := range pc.Backends {
		out[i] = discovery.Target{Addr: b.Address, Weight: b.Weight}
	}
	return out
}

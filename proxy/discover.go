package proxy

import (
	"context"
	"time"

	"github.com/xlb-project/xlb/proxy/balance"
	"github.com/xlb-project/xlb/proxy/discovery"

	"github.com/xlb-project/xlb/proxy/config"
)

// watcher runs the discovery of one pool.
type watcher struct {
	cfg    config.DiscoveryConfig
	dns    config.DNSConfig
	cancel context.CancelFunc
	done   chan struct{}
}

func (w *watcher) same(d *config.DiscoveryConfig) bool {
	if d == nil || d.File != w.cfg.File || d.Interval != w.cfg.Interval || (d.DNS == nil) != (w.cfg.DNS == nil) {
		return false
	}
	return d.DNS == nil || *d.DNS == w.dns
}

// syncDiscovery starts a watcher for every discovered pool of p.cfg and
// stops those of pools that are gone or changed. Called with p.mu held.
func (p *Proxy) syncDiscovery() {
	want := map[string]*config.DiscoveryConfig{}
	for i := range p.cfg.Pools {
		if d := p.cfg.Pools[i].Discovery; d != nil {
			want[p.cfg.Pools[i].Name] = d
		}
	}
	for name, w := range p.watchers {
		if !w.same(want[name]) {
			w.cancel()
			delete(p.watchers, name)
			if want[name] == nil {
				delete(p.discovered, name)
			}
		}
	}
	for name, d := range want {
		if p.watchers[name] != nil {
			continue
		}
		var src discovery.Source
		w := &watcher{cfg: *d, done: make(chan struct{})}
		if d.DNS != nil {
			w.dns = *d.DNS
			src = d.DNS.Source()
		} else {
			src = discovery.NewFile(d.File)
		}
		ctx, cancel := context.WithCancel(p.runCtx)
		w.cancel = cancel
		p.watchers[name] = w
		go p.watch(ctx, w, name, src)
	}
}

func (p *Proxy) stopDiscovery() {
	p.mu.Lock()
	ws := p.watchers
	p.watchers = map[string]*watcher{}
	p.mu.Unlock()
	for _, w := range ws {
		w.cancel()
		<-w.done
	}
}

// watch runs discovery.Watch for a pool until ctx ends, retrying while the
// first answer fails.
func (p *Proxy) watch(ctx context.Context, w *watcher, poolName string, src discovery.Source) {
	defer close(w.done)
	log := p.log.With("pool", poolName)
	for {
		err := discovery.Watch(ctx, src, w.cfg.Interval.D(), log, func(ts []discovery.Target) {
			p.updateMembers(poolName, ts)
		})
		if ctx.Err() != nil {
			return
		}
		log.Error("discover backends; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.Interval.D()):
		}
	}
}

// updateMembers replaces the members of a discovered pool.
func (p *Proxy) updateMembers(poolName string, ts []discovery.Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.discovered[poolName] = ts
	st := p.state.Load()
	pl := st.pools[poolName]
	if pl == nil || pl.cfg.Discovery == nil {
		return
	}
	alg, _ := balance.ParseAlgorithm(pl.cfg.Algorithm)
	var pending []func()
	m, err := p.buildMembers(pl, alg, ts, len(pl.members.Load().backends) > 0, &pending)
	if err != nil {
		p.log.Error("apply discovered backends", "pool", poolName, "err", err)
		return
	}
	for _, f := range pending {
		f()
	}
	// The new backends' health is already defined (unknown or healthy), so
	// they may be published before their checks are registered.
	pl.members.Store(m)
	p.syncBackends(st, func() {})
	p.log.Info("backends discovered", "pool", poolName, "count", len(ts))
}

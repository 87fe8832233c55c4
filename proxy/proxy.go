package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/proxy/admin"
	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/discovery"
	"github.com/xlb-project/xlb/proxy/internal/clientaddr"
	"github.com/xlb-project/xlb/proxy/internal/pathnorm"
	"github.com/xlb-project/xlb/proxy/internal/upstream"
	"github.com/xlb-project/xlb/proxy/middleware"
)

// Errors the admin API and its callers act on.
var (
	// ErrNoBackend: the pool has no backend with that address.
	ErrNoBackend = admin.ErrNoBackend
	// ErrNoConfigPath: reload was asked but the proxy was not started from a file.
	ErrNoConfigPath = errors.New("proxy has no config file to reload")
)

// Options are the proxy's dependencies; the zero value works.
type Options struct {
	// Logger receives operational logs (not the access log). Default: discard.
	Logger *slog.Logger
	// ConfigPath is re-read by Reload (SIGHUP, admin API).
	ConfigPath string
	// Middleware maps a route middleware kind to its factory (see
	// proxy/middleware).
	Middleware map[string]middleware.Factory
	// HealthClock drives the active checks; default the system clock.
	HealthClock check.Clock
	// Collectors are registered with the proxy's own metrics (those of
	// the middlewares, say).
	Collectors []prometheus.Collector
}

// Proxy is the L7 proxy: a compiled config (swapped atomically on reload),
// its listeners, the backends' state and the health prober.
type Proxy struct {
	log     *slog.Logger
	opts    Options
	metrics *metrics
	conns   *connRegistry
	prober  *check.Prober
	ids     idSource
	state   atomic.Pointer[state]

	mu       sync.Mutex // serialises Reload, Drain, listener changes
	cfg      *config.Config
	backends map[string]*backend // "pool/address" -> backend, for reuse across reloads
	// discovered is the last list each discovered pool got; watchers run
	// the discovery of each pool.
	discovered map[string][]discovery.Target
	watchers   map[string]*watcher
	listeners  map[string]*listener
	running    bool
	runCtx     context.Context
	wg         sync.WaitGroup
	admin      *admin.Server
}

// state is one compiled config; requests load it once and use it throughout.
type state struct {
	cfg         *config.Config
	routes      []*route
	pools       map[string]*pool
	trusted     []netip.Prefix
	clients     clientaddr.Source // the client address from trusted forwarding headers
	reqIDHeader string
	paths       pathnorm.Options
	accessLog   *accessLog
	rp          *httputil.ReverseProxy
	transport   *http.Transport  // upgrades (WebSocket)
	client      *upstream.Client // plain requests
	metrics     *metrics
	log         *slog.Logger
	// pending are the changes to objects the running state shares, made
	// when st is installed (see buildMembers).
	pending []func()
}

// New builds a proxy from cfg (already validated by Parse or Load). Nothing
// listens until Run.
func New(cfg *config.Config, opts Options) (*Proxy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		log:        opts.Logger,
		opts:       opts,
		metrics:    newMetrics(),
		backends:   map[string]*backend{},
		discovered: map[string][]discovery.Target{},
		watchers:   map[string]*watcher{},
		listeners:  map[string]*listener{},
	}
	for _, c := range opts.Collectors {
		if err := p.metrics.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register middleware metrics: %w", err)
		}
	}
	p.conns = newConnRegistry(p.metrics.upgraded)
	var pfx [6]byte
	_, _ = rand.Read(pfx[:])
	p.ids.prefix = hex.EncodeToString(pfx[:])
	p.prober = check.NewProber(check.Config{Logger: opts.Logger, Clock: opts.HealthClock, OnEvent: p.onHealthEvent})
	st, err := p.compile(cfg, nil)
	if err != nil {
		return nil, err
	}
	p.install(cfg, st)
	return p, nil
}

// Metrics returns the handler serving the proxy's Prometheus metrics.
func (p *Proxy) Metrics() http.Handler {
	return promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry behind Metrics, whose Describe lists every
// metric the proxy can export (deploy/ checks its dashboard against it).
func (p *Proxy) Registry() *prometheus.Registry { return p.metrics.reg }

// compile builds a state from cfg without changing anything running. old
// is the running state (nil on the first load).
func (p *Proxy) compile(cfg *config.Config, old *state) (*state, error) {
	st := &state{
		cfg:         cfg,
		pools:       map[string]*pool{},
		reqIDHeader: cfg.RequestIDHeader,
		paths: pathnorm.Options{
			MergeSlashes:       cfg.PathNormalization.MergeSlashes == nil || *cfg.PathNormalization.MergeSlashes,
			KeepEncodedSlashes: cfg.PathNormalization.EncodedSlashes == "keep",
		},
		metrics: p.metrics,
		log:     p.log,
	}
	for _, s := range cfg.TrustedProxies {
		pfx, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: trusted_proxies %q: %w", config.ErrConfig, s, err)
		}
		st.trusted = append(st.trusted, pfx)
	}
	st.clients = clientaddr.Source{Trusted: st.trusted, Forwarded: cfg.ClientAddressHeader == "forwarded"}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		var oldPool *pool
		if old != nil {
			oldPool = old.pools[pc.Name]
		}
		targets := staticTargets(pc)
		if pc.Discovery != nil {
			targets = p.discovered[pc.Name] // the last answer; empty until the first
		}
		pl, err := p.buildPool(pc, targets, oldPool, &st.pending)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", config.ErrConfig, err)
		}
		st.pools[pl.name] = pl
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		rt, err := compileRoute(rc, st.pools)
		if err != nil {
			return nil, fmt.Errorf("%w: route %s: %w", config.ErrConfig, rc.Name, err)
		}
		if err := rt.compileResilience(rc, st.pools, old.route(rc.Name)); err != nil {
			return nil, fmt.Errorf("%w: route %s: %w", config.ErrConfig, rc.Name, err)
		}
		st.pending = append(st.pending, func() { rt.metrics = p.metrics.route(rt.name) })
		var oldGate *limitGate
		if old != nil {
			for _, o := range old.routes {
				if o.name == rt.name {
					oldGate = o.inflight
				}
			}
		}
		rt.inflight = p.metrics.newLimitGate("route_max_in_flight", rt.name, rc.MaxInFlight, oldGate)
		var mws []middleware.Middleware
		for j := range rc.Middleware {
			mc := &rc.Middleware[j]
			f := p.opts.Middleware[mc.Kind]
			if f == nil {
				return nil, fmt.Errorf("%w: routes[%s].middleware[%d].kind %q: no such middleware is registered", config.ErrConfig, rc.Name, j, mc.Kind)
			}
			mw, err := f(rc.Name, &mc.Config)
			if err != nil {
				return nil, fmt.Errorf("%w: routes[%s].middleware[%d] (%s): %w", config.ErrConfig, rc.Name, j, mc.Kind, err)
			}
			mws = append(mws, mw)
		}
		if len(mws) > 0 {
			rt.handler = middleware.Chain(finalHandler{rt: rt}, mws...)
		}
		st.routes = append(st.routes, rt)
	}
	if old != nil && old.cfg.Timeouts == cfg.Timeouts {
		st.transport = old.transport // keep the idle backend connections
		st.client = old.client
	} else {
		st.transport = newTransport(cfg.Timeouts)
		st.client = upstream.NewClient(cfg.Timeouts.Connect.D(), cfg.Timeouts.ResponseHeader.D(), cfg.Timeouts.Idle.D())
	}
	if old != nil && old.cfg.AccessLog == cfg.AccessLog {
		st.accessLog = old.accessLog
	} else if cfg.AccessLog.Path != "" {
		al, err := openAccessLog(cfg.AccessLog.Path)
		if err != nil {
			return nil, err
		}
		st.accessLog = al
	}
	st.rp = newReverseProxy(st, st.transport)
	return st, nil
}

// route returns the route named name, or nil (also when st is nil).
func (st *state) route(name string) *route {
	if st == nil {
		return nil
	}
	for _, rt := range st.routes {
		if rt.name == name {
			return rt
		}
	}
	return nil
}

// newTransport is the backend-side client of upgraded (WebSocket) requests;
// plain requests use the upstream client (proxy/internal/upstream). Tuned
// for a proxy: many idle connections per backend (the default of 2 makes
// every burst dial), no compression negotiated on the client's behalf, no
// environment proxy.
func newTransport(t config.TimeoutConfig) *http.Transport {
	d := &net.Dialer{Timeout: t.Connect.D(), KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        t.Idle.D(),
		ResponseHeaderTimeout:  t.ResponseHeader.D(),
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		MaxResponseHeaderBytes: 64 << 10,
		WriteBufferSize:        16 << 10,
		ReadBufferSize:         16 << 10,
	}
}

// abandon releases what compile opened for st that the running state old
// does not share, when st is not installed.
func (st *state) abandon(old *state) {
	if st.accessLog != nil && (old == nil || st.accessLog != old.accessLog) {
		st.accessLog.close()
	}
}

// install publishes st and updates the backend registry, the health checks
// and the metrics of removed backends and routes. Called with p.mu held (or
// before the proxy is shared).
func (p *Proxy) install(cfg *config.Config, st *state) {
	for _, f := range st.pending {
		f()
	}
	st.pending = nil
	old := p.state.Load()
	p.syncBackends(st, func() { p.state.Store(st) })
	if old != nil {
		names := map[string]bool{}
		for _, rt := range st.routes {
			names[rt.name] = true
		}
		for _, rt := range old.routes {
			if !names[rt.name] {
				p.metrics.forgetRoute(rt.name)
			}
		}
		if old.transport != st.transport {
			go func(t *http.Transport, c *upstream.Client) {
				time.Sleep(cfg.DrainTimeout.D())
				t.CloseIdleConnections()
				c.CloseIdleConnections()
			}(old.transport, old.client)
		}
		if old.accessLog != nil && old.accessLog != st.accessLog {
			go func(al *accessLog) {
				time.Sleep(cfg.DrainTimeout.D())
				al.close()
			}(old.accessLog)
		}
	}
	p.cfg = cfg
	if p.running {
		p.syncDiscovery()
	}
}

// syncBackends makes the backend registry, the health checks and the
// metrics match the members of st's pools; publish makes them live, after
// the checks of new backends exist and before removed ones are forgotten.
// Called with p.mu held.
func (p *Proxy) syncBackends(st *state, publish func()) {
	keep := map[string]*backend{}
	for _, pl := range st.pools {
		for _, b := range pl.members.Load().backends {
			keep[b.healthID()] = b
			b.metrics.drained.Set(boolFloat(b.drained.Load()))
			b.metrics.healthy.Set(boolFloat(b.healthState() == check.Healthy))
		}
	}
	// Health checks first, so a new backend has its check before traffic;
	// its state is already defined (unknown or start_healthy).
	for id, b := range keep {
		if spec := b.spec.Load(); spec != nil {
			if err := p.prober.Set(id, *spec); err != nil {
				p.log.Error("set health check", "backend", id, "err", err)
			}
		} else {
			p.prober.Remove(id)
		}
	}
	publish()
	for id, b := range p.backends {
		if keep[id] == nil {
			p.prober.Remove(id)
			p.metrics.forgetBackend(b.pool, b.ID)
			p.closeUpgradedLater(b, "backend removed")
		}
	}
	p.backends = keep
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// onHealthEvent applies a health change from the prober.
func (p *Proxy) onHealthEvent(ev check.Event) {
	p.mu.Lock()
	b := p.backends[ev.ID]
	p.mu.Unlock()
	if b == nil {
		return
	}
	b.health.Store(uint32(ev.To))
	b.metrics.healthy.Set(boolFloat(ev.To == check.Healthy))
	if ev.To == check.Healthy && ev.From != check.Healthy {
		p.rampBackend(b.pool, b.ID)
	}
	p.log.Info("backend health changed", "pool", b.pool, "backend", b.ID, "from", ev.From.String(), "to", ev.To.String(), "reason", ev.Reason)
}

// Reload reads the config file again and applies it. An invalid config is
// rejected with its error and the running one stays.
func (p *Proxy) Reload() error {
	if p.opts.ConfigPath == "" {
		return ErrNoConfigPath
	}
	cfg, err := config.Load(p.opts.ConfigPath)
	if err != nil {
		p.metrics.reloads.WithLabelValues("error").Inc()
		return fmt.Errorf("reload: %w", err)
	}
	return p.Apply(cfg)
}

// Apply switches to cfg (validated by Parse or Load) without dropping
// in-flight requests or open connections: requests already routed finish
// on the old state, listeners whose settings are unchanged keep running,
// and backends that stay keep their drain flag, health and counters. A
// changed admin socket or metrics address is opened before anything
// changes. A config that fails (an error naming the key) leaves the
// running proxy exactly as it was.
func (p *Proxy) Apply(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Everything that can fail comes before anything running changes.
	var err error
	if p.running {
		err = p.checkListeners(cfg)
	}
	old := p.state.Load()
	var st *state
	if err == nil {
		st, err = p.compile(cfg, old)
	}
	commitAdmin := func() {}
	if err == nil && p.running && p.admin != nil {
		if commitAdmin, _, err = p.admin.Update(cfg.Admin); err != nil {
			st.abandon(old)
		}
	}
	if err != nil {
		p.metrics.reloads.WithLabelValues("error").Inc()
		return fmt.Errorf("reload: %w", err)
	}
	p.install(cfg, st)
	commitAdmin()
	if p.running {
		if err := p.syncListeners(); err != nil {
			// The config is applied; only these listeners are missing.
			p.log.Error("start listener", "err", err)
			p.metrics.reloads.WithLabelValues("error").Inc()
			return fmt.Errorf("reload: config applied but: %w", err)
		}
	}
	p.metrics.reloads.WithLabelValues("ok").Inc()
	p.log.Info("config applied", "routes", len(st.routes), "pools", len(st.pools), "listeners", len(cfg.Listeners))
	return nil
}

// Backends lists every backend of every pool, in config order.
func (p *Proxy) Backends() []admin.BackendInfo {
	st := p.state.Load()
	now := time.Now()
	var out []admin.BackendInfo
	for _, pc := range st.cfg.Pools {
		for _, b := range st.pools[pc.Name].members.Load().backends {
			total, failed := b.Requests()
			out = append(out, admin.BackendInfo{
				Pool: b.pool, Address: b.ID, Weight: b.Weight, Health: b.healthState().String(),
				Drained: b.drained.Load(), InFlight: b.InFlight(), Requests: total, Failures: failed,
				Upgraded: p.conns.countUpgraded(func(x *backend) bool { return x == b }),
				Breaker:  b.breakerState(now),
			})
			if r := b.Ramp(now); r < 1 {
				out[len(out)-1].Ramp = r
			}
		}
	}
	return out
}

// Drain stops sending new requests to a backend; requests in flight finish
// and its upgraded connections are closed after the drain timeout. The flag
// survives reloads while the backend stays configured.
func (p *Proxy) Drain(poolName, addr string) error {
	return p.setDrained(poolName, addr, true)
}

// Undrain makes a drained backend take new requests again.
func (p *Proxy) Undrain(poolName, addr string) error {
	return p.setDrained(poolName, addr, false)
}

func (p *Proxy) setDrained(poolName, addr string, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.state.Load().pools[poolName]
	if pl == nil {
		return fmt.Errorf("%w: pool %q is not configured", ErrNoBackend, poolName)
	}
	b := pl.find(addr)
	if b == nil {
		return fmt.Errorf("%w: pool %q has no backend %q", ErrNoBackend, poolName, addr)
	}
	if b.drained.Swap(on) == on {
		return nil
	}
	b.metrics.drained.Set(boolFloat(on))
	if on {
		p.log.Info("backend drained", "pool", poolName, "backend", addr)
		p.closeUpgradedLater(b, "backend drained")
	} else {
		p.log.Info("backend undrained", "pool", poolName, "backend", addr)
		b.StartRamp(time.Now(), pl.guard.slow)
	}
	return nil
}

// closeUpgradedLater closes b's upgraded connections after the drain
// timeout, unless b was undrained (and is still configured) by then.
func (p *Proxy) closeUpgradedLater(b *backend, why string) {
	d := p.state.Load().cfg.DrainTimeout.D()
	time.AfterFunc(d, func() {
		p.mu.Lock()
		still := p.backends[b.healthID()] == b
		p.mu.Unlock()
		if still && !b.drained.Load() {
			return
		}
		if n := p.conns.closeUpgraded(func(x *backend) bool { return x == b }); n > 0 {
			p.log.Info("closed upgraded connections", "pool", b.pool, "backend", b.ID, "count", n, "reason", why)
		}
	})
}

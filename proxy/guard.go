package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xlb-project/xlb/proxy/adaptive"
	"github.com/xlb-project/xlb/proxy/balance"
	"github.com/xlb-project/xlb/proxy/breaker"
	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/internal/upstream"
)

// guard is a pool's resilience state: the pool's own breaker, the rules of
// its backends' breakers, the adaptive concurrency limit and slow start.
// Kept across reloads while their config is unchanged.
type guard struct {
	beCfg      *config.BreakerConfig // per backend; nil: none
	beRules    failureRules
	pool       *breaker.Breaker // nil: none
	poolCfg    *config.BreakerConfig
	poolRules  failureRules
	limiter    *adaptive.Limiter // nil: no load shedding
	limCfg     *config.AdaptiveConfig
	limGauge   prometheus.Gauge
	retryAfter []string
	slow       balance.SlowStart // Window 0: none
}

// failureRules say which attempt results count against a breaker.
type failureRules struct {
	connect, reset, timeout bool
	statuses                []int
}

func rulesOf(c *config.BreakerConfig) failureRules {
	return failureRules{
		connect:  slices.Contains(c.FailureOn, "connect_failure"),
		reset:    slices.Contains(c.FailureOn, "reset"),
		timeout:  slices.Contains(c.FailureOn, "timeout"),
		statuses: c.FailureStatuses,
	}
}

// resultKind is how an attempt at a backend ended.
type resultKind uint8

const (
	resultOK        resultKind = iota // a response head arrived
	resultConnect                     // no connection could be made
	resultReset                       // the connection broke before a response
	resultTimeout                     // per-try, response-header or route timeout
	resultMalformed                   // the backend answered something that is not HTTP
	resultClient                      // the client went away or sent a bad body: never the backend's fault
)

type attemptResult struct {
	kind   resultKind
	status int // for resultOK
}

func (r attemptResult) failed() bool {
	return r.kind != resultOK && r.kind != resultClient
}

func (fr *failureRules) outcome(r attemptResult) breaker.Outcome {
	switch r.kind {
	case resultOK:
		if slices.Contains(fr.statuses, r.status) {
			return breaker.Failure
		}
		return breaker.Success
	case resultConnect:
		return countIf(fr.connect)
	case resultReset:
		return countIf(fr.reset)
	case resultTimeout:
		return countIf(fr.timeout)
	case resultMalformed:
		return breaker.Failure
	}
	return breaker.Ignore
}

func countIf(on bool) breaker.Outcome {
	if on {
		return breaker.Failure
	}
	return breaker.Ignore
}

// classify turns the error of an exchange with a backend into a result. ctx
// is the request's context (the client's and the route's deadline), tctx
// the attempt's.
func classify(err error, ctx, tctx context.Context) attemptResult {
	switch {
	case err == nil:
		return attemptResult{kind: resultOK}
	case errors.Is(ctx.Err(), context.Canceled), errors.Is(err, upstream.ErrRequestBody):
		// Before the timeout case: a client's body too slow is a timeout
		// of the client's.
		return attemptResult{kind: resultClient}
	case tctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err):
		return attemptResult{kind: resultTimeout}
	case upstream.IsMalformed(err):
		return attemptResult{kind: resultMalformed}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return attemptResult{kind: resultConnect}
	}
	// Anything else broke the connection before a response head:
	// errNoResponse, a reset, a failed write of the request.
	return attemptResult{kind: resultReset}
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// buildGuard compiles a pool's resilience config, keeping the old pool's
// breaker and limiter when their config is unchanged.
func (p *Proxy) buildGuard(pc *config.PoolConfig, old *pool) (guard, error) {
	var g guard
	if c := pc.Breaker; c != nil {
		g.beCfg, g.beRules = c, rulesOf(c)
	}
	if c := pc.PoolBreaker; c != nil {
		g.poolCfg, g.poolRules = c, rulesOf(c)
		if old != nil && old.guard.pool != nil && sameConfig(old.guard.poolCfg, c) {
			g.pool = old.guard.pool
		} else {
			cfg := c.Breaker()
			name := pc.Name
			cfg.OnChange = func(ch breaker.Change) { p.onBreakerChange(name, "", ch) }
			br, err := breaker.New(name, cfg)
			if err != nil {
				return g, fmt.Errorf("pool %s: pool_breaker: %w", pc.Name, err)
			}
			g.pool = br
		}
	}
	if c := pc.Adaptive; c != nil {
		g.limCfg = c
		if old != nil && old.guard.limiter != nil && sameConfig(old.guard.limCfg, c) {
			g.limiter = old.guard.limiter
		} else {
			l, err := adaptive.New(c.Adaptive())
			if err != nil {
				return g, fmt.Errorf("pool %s: adaptive_concurrency: %w", pc.Name, err)
			}
			g.limiter = l
		}
		g.retryAfter = []string{strconv.Itoa(int(c.RetryAfter.D() / time.Second))}
		g.limGauge = p.metrics.res.limit.WithLabelValues(pc.Name)
		g.limGauge.Set(float64(g.limiter.Limit()))
	}
	if c := pc.SlowStart; c != nil {
		g.slow = c.SlowStart()
	}
	return g, nil
}

func sameConfig[T any](a, b *T) bool {
	return a != nil && b != nil && fmt.Sprintf("%+v", *a) == fmt.Sprintf("%+v", *b)
}

// newBackendBreaker returns b's breaker for the pool's config: b's own when
// its config is unchanged, else a new one; nil without config.
func (p *Proxy) backendBreaker(pl *pool, b, old *backend) *breaker.Breaker {
	c := pl.guard.beCfg
	if c == nil {
		return nil
	}
	if old != nil && sameConfig(old.breakerCfg.Load(), c) {
		if br := old.breaker.Load(); br != nil {
			return br
		}
	}
	cfg := c.Breaker()
	poolName, id := pl.name, b.ID
	cfg.OnChange = func(ch breaker.Change) { p.onBreakerChange(poolName, id, ch) }
	br, err := breaker.New(id, cfg)
	if err != nil {
		return nil // validated with the config
	}
	return br
}

// onBreakerChange logs and counts a breaker's state change; a backend whose
// breaker closes again starts its slow start.
func (p *Proxy) onBreakerChange(poolName, backendID string, ch breaker.Change) {
	args := []any{"pool", poolName, "from", ch.From.String(), "to", ch.To.String(), "reason", ch.Reason, "generation", ch.Generation}
	if backendID != "" {
		args = append(args, "backend", backendID)
	}
	if ch.To == breaker.Open {
		args = append(args, "until", ch.Until, "trips", ch.Trips)
		p.log.Warn("circuit breaker opened", args...)
	} else {
		p.log.Info("circuit breaker changed", args...)
	}
	p.metrics.res.breakerChange(poolName, backendID, ch.To)
	if backendID != "" && ch.To == breaker.Closed {
		p.rampBackend(poolName, backendID)
	}
}

// rampBackend starts the slow start of a backend that became usable again.
func (p *Proxy) rampBackend(poolName, addr string) {
	st := p.state.Load()
	if st == nil {
		return
	}
	pl := st.pools[poolName]
	if pl == nil || pl.guard.slow.Window == 0 {
		return
	}
	if b := pl.find(addr); b != nil {
		b.StartRamp(time.Now(), pl.guard.slow)
	}
}

// admission is what admit hands to one attempt: the backend and the tickets
// of the breakers and limiter it passed.
type admission struct {
	b        *backend
	ticket   breaker.Ticket
	poolTk   breaker.Ticket
	hasPool  bool
	hasTk    bool
	limiterd bool
}

// Why admit found no backend.
const (
	noBackend   = "no_backend"
	poolOpen    = "pool_breaker_open"
	shedRequest = "shed"
)

// admit passes the pool's breaker and limiter and picks a backend whose
// breaker lets the request through, preferring one not in tried.
func (pl *pool) admit(w http.ResponseWriter, r *http.Request, e *exchange, tried []*backend) (admission, string) {
	var a admission
	now := time.Now()
	g := &pl.guard
	if g.pool != nil {
		tk, ok := g.pool.Allow(now)
		if !ok {
			return a, poolOpen
		}
		a.poolTk, a.hasPool = tk, true
	}
	if g.limiter != nil {
		if !g.limiter.Acquire() {
			pl.abandon(&a, now)
			return a, shedRequest
		}
		a.limiterd = true
	}
	skip := tried
	for range 4 {
		b := pl.pickSkipping(w, r, e, skip)
		if b == nil {
			break
		}
		br := b.breaker.Load()
		if br == nil {
			a.b = b
			return a, ""
		}
		if tk, ok := br.Allow(now); ok {
			a.b, a.ticket, a.hasTk = b, tk, true
			return a, ""
		}
		// Its half-open probes were taken since the pick looked.
		skip = append(slices.Clip(skip), b)
	}
	pl.abandon(&a, now)
	return a, noBackend
}

// abandon gives back what an admission took, counting nothing.
func (pl *pool) abandon(a *admission, now time.Time) {
	if a.hasPool {
		pl.guard.pool.Report(a.poolTk, breaker.Ignore, now)
		a.hasPool = false
	}
	if a.limiterd {
		pl.guard.limiter.Release(0, false, now)
		a.limiterd = false
	}
}

// settle reports how an admitted attempt went to the breakers and the limiter.
func (pl *pool) settle(a *admission, res attemptResult, latency time.Duration, now time.Time) {
	g := &pl.guard
	if a.hasTk {
		if br := a.b.breaker.Load(); br != nil {
			br.Report(a.ticket, g.beRules.outcome(res), now)
		}
	}
	if a.hasPool {
		g.pool.Report(a.poolTk, g.poolRules.outcome(res), now)
	}
	if a.limiterd {
		measured := res.kind == resultOK || res.kind == resultTimeout
		g.limiter.Release(latency, measured, now)
		g.limGauge.Set(float64(g.limiter.Limit()))
	}
}

// pickSkipping picks like pick, passing over the backends in skip while
// another is usable.
func (pl *pool) pickSkipping(w http.ResponseWriter, r *http.Request, e *exchange, skip []*backend) *backend {
	if len(skip) == 0 {
		return pl.pick(w, r, e)
	}
	m := pl.members.Load()
	var key uint64
	if pl.hashed {
		key = pl.key.Key(r, e.client)
	}
	bb := m.picker.Pick(key, func(bb *balance.Backend) bool {
		for _, s := range skip {
			if s.Backend == bb {
				return false
			}
		}
		return m.usable(bb)
	})
	if bb == nil {
		bb = m.picker.Pick(key, m.isUsable)
	}
	if bb == nil {
		return nil
	}
	return m.byBal[bb]
}

// shed answers a request refused by the pool's concurrency limit.
func (pl *pool) shed(w http.ResponseWriter) {
	h := w.Header()
	h["Retry-After"] = pl.guard.retryAfter
	http.Error(w, "pool overloaded, retry later", http.StatusServiceUnavailable)
}

// breakerState is a backend's breaker state for the admin API.
func (b *backend) breakerState(now time.Time) string {
	br := b.breaker.Load()
	if br == nil {
		return ""
	}
	return br.Status(now).State.String()
}

package config

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/xlb-project/xlb/proxy/adaptive"
	"github.com/xlb-project/xlb/proxy/balance"
	"github.com/xlb-project/xlb/proxy/breaker"
	"github.com/xlb-project/xlb/proxy/lastgood"
	"github.com/xlb-project/xlb/proxy/retry"
)

// Config of the resilience features: circuit breakers, slow start and the
// adaptive concurrency limit per pool; retries and fallbacks per route. Zero
// fields take the defaults of the packages that implement them, named in
// each comment.

// BreakerConfig is a circuit breaker (proxy/breaker), per backend
// (pools[].breaker) or for the whole pool (pools[].pool_breaker).
type BreakerConfig struct {
	FailureRatio        float64  `yaml:"failure_ratio"`        // default 0.5
	MinRequests         int      `yaml:"min_requests"`         // default 20, in the window
	Window              Duration `yaml:"window"`               // default 10s
	ConsecutiveFailures int      `yaml:"consecutive_failures"` // default 5; -1: off
	OpenBase            Duration `yaml:"open_base"`            // default 5s, doubled per repeated trip
	OpenMax             Duration `yaml:"open_max"`             // default 60s
	Jitter              float64  `yaml:"jitter"`               // default 0.2 (±20%); -1: off
	Probes              int      `yaml:"probes"`               // default 1, let through half-open
	// FailureOn lists what counts as a failure besides FailureStatuses:
	// connect_failure, reset, timeout. Default all three. A client error
	// (the client went away, its body was malformed) never counts.
	FailureOn []string `yaml:"failure_on"`
	// FailureStatuses are response codes that count as failures; default
	// 502, 503, 504.
	FailureStatuses []int `yaml:"failure_statuses"`
}

// failureKinds are the values of BreakerConfig.FailureOn.
var failureKinds = []string{"connect_failure", "reset", "timeout"}

func (c *BreakerConfig) validate(f string) error {
	if len(c.FailureOn) == 0 {
		c.FailureOn = slices.Clone(failureKinds)
	}
	for _, k := range c.FailureOn {
		if !slices.Contains(failureKinds, k) {
			return bad(f+".failure_on", k, "allowed: "+strings.Join(failureKinds, ", "))
		}
	}
	if c.FailureStatuses == nil {
		c.FailureStatuses = []int{502, 503, 504}
	}
	for _, s := range c.FailureStatuses {
		if s < 500 || s > 599 {
			return bad(f+".failure_statuses", s, "allowed: 500 to 599")
		}
	}
	bc := c.Breaker().WithDefaults()
	if err := bc.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, f, err)
	}
	return nil
}

func (c *BreakerConfig) Breaker() breaker.Config {
	return breaker.Config{
		FailureRatio: c.FailureRatio, MinRequests: c.MinRequests, Window: c.Window.D(),
		ConsecutiveFailures: c.ConsecutiveFailures, OpenBase: c.OpenBase.D(), OpenMax: c.OpenMax.D(),
		Jitter: c.Jitter, Probes: c.Probes,
	}
}

// SlowStartConfig ramps a backend that becomes usable (added, healthy
// again, undrained, its breaker closed) from MinShare of its weight to all of
// it over Window, for every algorithm (see proxy/balance).
type SlowStartConfig struct {
	Window   Duration `yaml:"window"`    // required, up to 1h
	MinShare float64  `yaml:"min_share"` // default 0.1
}

func (c *SlowStartConfig) validate(f string) error {
	if c.Window <= 0 {
		return bad(f+".window", c.Window.D(), "required: from 1ms to 1h")
	}
	if err := c.SlowStart().Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, f, err)
	}
	return nil
}

func (c *SlowStartConfig) SlowStart() balance.SlowStart {
	return balance.SlowStart{Window: c.Window.D(), MinShare: c.MinShare}
}

// AdaptiveConfig is the pool's adaptive concurrency limit (load shedding,
// proxy/adaptive): requests over the limit are answered 503 with
// Retry-After at once.
type AdaptiveConfig struct {
	InitialLimit       int      `yaml:"initial_limit"`        // default 50
	MinLimit           int      `yaml:"min_limit"`            // default 4
	MaxLimit           int      `yaml:"max_limit"`            // default 1000
	Tolerance          float64  `yaml:"tolerance"`            // default 2: latency may reach 2× the best before the limit shrinks
	Interval           Duration `yaml:"interval"`             // default 100ms between limit updates
	MinLatencyInterval Duration `yaml:"min_latency_interval"` // default 30s between measurements of the best latency
	RetryAfter         Duration `yaml:"retry_after"`          // default 1s, whole seconds in the header
}

func (c *AdaptiveConfig) validate(f string) error {
	defDur(&c.RetryAfter, time.Second)
	if c.RetryAfter < Duration(time.Second) || c.RetryAfter > Duration(time.Hour) {
		return bad(f+".retry_after", c.RetryAfter.D(), "allowed: 1s to 1h")
	}
	if err := c.Adaptive().WithDefaults().Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, f, err)
	}
	return nil
}

func (c *AdaptiveConfig) Adaptive() adaptive.Config {
	return adaptive.Config{
		InitialLimit: c.InitialLimit, MinLimit: c.MinLimit, MaxLimit: c.MaxLimit, Tolerance: c.Tolerance,
		Interval: c.Interval.D(), MinLatencyInterval: c.MinLatencyInterval.D(),
	}
}

// RetryConfig is a route's retry policy (proxy/retry).
type RetryConfig struct {
	// Attempts including the first, 2 to 10; required.
	Attempts int `yaml:"attempts"`
	// On: connect_failure, reset, per_try_timeout; default connect_failure
	// and reset.
	On []string `yaml:"on"`
	// Statuses retried, e.g. [502, 503, 504]; default none.
	Statuses []int `yaml:"statuses"`
	// NonIdempotent retries POST, PATCH and the like too; default false
	// (they are retried only with an Idempotency-Key header).
	NonIdempotent bool `yaml:"non_idempotent"`
	// BodyLimit is the largest request body buffered to be sent again;
	// bigger or longer bodies are streamed once and not retried. Default
	// 64 KiB.
	BodyLimit int64 `yaml:"body_limit"`
	// PerTryTimeout bounds each attempt up to the response head; default
	// none.
	PerTryTimeout Duration `yaml:"per_try_timeout"`
	// Deadline bounds the whole request (attempts and waits); default the
	// route's timeout.
	Deadline    Duration `yaml:"deadline"`
	BackoffBase Duration `yaml:"backoff_base"` // default 25ms
	BackoffMax  Duration `yaml:"backoff_max"`  // default 250ms
	// Budget caps retries at Ratio of the route's requests plus Floor per
	// second, over Window.
	Budget RetryBudgetConfig `yaml:"budget"`
}

// RetryBudgetConfig sizes a route's retry budget.
type RetryBudgetConfig struct {
	Ratio  float64  `yaml:"ratio"`  // default 0.2; -1: none (floor only)
	Floor  float64  `yaml:"floor"`  // retries per second, default 3; -1: none
	Window Duration `yaml:"window"` // default 10s
}

func (c *RetryConfig) validate(f string) error {
	if c.Attempts < 2 || c.Attempts > retry.MaxAttempts {
		return bad(f+".attempts", c.Attempts, fmt.Sprintf("allowed: 2 to %d (tries including the first)", retry.MaxAttempts))
	}
	if err := c.Policy().Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, f, err)
	}
	if err := c.BudgetConfig().WithDefaults().Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, f, err)
	}
	return nil
}

func (c *RetryConfig) Policy() retry.Policy {
	on := make([]retry.Reason, len(c.On))
	for i, s := range c.On {
		on[i] = retry.Reason(s)
	}
	return retry.Policy{
		Attempts: c.Attempts, On: on, Statuses: c.Statuses, NonIdempotent: c.NonIdempotent,
		BodyLimit: c.BodyLimit, PerTryTimeout: c.PerTryTimeout.D(), Deadline: c.Deadline.D(),
		BackoffBase: c.BackoffBase.D(), BackoffMax: c.BackoffMax.D(),
	}.WithDefaults()
}

func (c *RetryConfig) BudgetConfig() retry.BudgetConfig {
	return retry.BudgetConfig{Ratio: c.Budget.Ratio, Floor: c.Budget.Floor, Window: c.Budget.Window.D()}
}

// FallbackConfig is what a route answers when its pool has no usable
// backend (all unhealthy, drained, ejected or behind open breakers, or the
// pool's breaker is open), tried in this order: the last good response (GET
// and HEAD), another pool, a fixed response; none of them: 503.
type FallbackConfig struct {
	LastGood *LastGoodConfig `yaml:"last_good"`
	Pool     string          `yaml:"pool"`
	Respond  *RespondConfig  `yaml:"respond"`
}

// LastGoodConfig bounds the route's cache of last good GET responses
// (proxy/lastgood); answers from it carry the header
// Xlb-Fallback: last_good and an Age.
type LastGoodConfig struct {
	MaxEntries   int      `yaml:"max_entries"`    // default 1000
	MaxBytes     int64    `yaml:"max_bytes"`      // default 16 MiB
	MaxBodyBytes int64    `yaml:"max_body_bytes"` // default 256 KiB
	MaxAge       Duration `yaml:"max_age"`        // default 5m
}

func (c *LastGoodConfig) LastGood() lastgood.Config {
	return lastgood.Config{MaxEntries: c.MaxEntries, MaxBytes: c.MaxBytes, MaxBodyBytes: c.MaxBodyBytes, MaxAge: c.MaxAge.D()}
}

func (c *FallbackConfig) validate(f string, pools map[string]bool, own string) error {
	if c.LastGood == nil && c.Pool == "" && c.Respond == nil {
		return bad(f, "{}", "needs at least one of last_good, pool and respond")
	}
	if c.LastGood != nil {
		if err := c.LastGood.LastGood().WithDefaults().Validate(); err != nil {
			return fmt.Errorf("%w: %s.last_good: %w", ErrConfig, f, err)
		}
	}
	if c.Pool != "" {
		if !pools[c.Pool] {
			return bad(f+".pool", c.Pool, "names no pool defined under pools")
		}
		if c.Pool == own {
			return bad(f+".pool", c.Pool, "is the route's own pool; name another")
		}
	}
	if r := c.Respond; r != nil {
		if r.Status == 0 {
			r.Status = http.StatusServiceUnavailable
		}
		if r.Status < 200 || r.Status > 599 {
			return bad(f+".respond.status", r.Status, "must be from 200 to 599")
		}
		if r.ContentType == "" {
			r.ContentType = "text/plain; charset=utf-8"
		}
	}
	return nil
}

// validateResilience checks a pool's resilience blocks.
func (p *PoolConfig) validateResilience(f string) error {
	if p.Breaker != nil {
		if err := p.Breaker.validate(f + ".breaker"); err != nil {
			return err
		}
	}
	if p.PoolBreaker != nil {
		if err := p.PoolBreaker.validate(f + ".pool_breaker"); err != nil {
			return err
		}
	}
	if p.SlowStart != nil {
		if err := p.SlowStart.validate(f + ".slow_start"); err != nil {
			return err
		}
	}
	if p.Adaptive != nil {
		if err := p.Adaptive.validate(f + ".adaptive_concurrency"); err != nil {
			return err
		}
	}
	return nil
}

// validateResilience checks a route's retry and fallback blocks.
func (r *RouteConfig) validateResilience(f string, pools map[string]bool) error {
	if (r.Retry != nil || r.Fallback != nil) && r.Pool == "" {
		return bad(f+".retry/fallback", "set", "only apply to routes with a pool")
	}
	if r.Retry != nil {
		if err := r.Retry.validate(f + ".retry"); err != nil {
			return err
		}
	}
	if r.Fallback != nil {
		if err := r.Fallback.validate(f+".fallback", pools, r.Pool); err != nil {
			return err
		}
	}
	return nil
}

package retry

import (
	"fmt"
	"sync"
	"time"
)

// Defaults for BudgetConfig.
const (
	DefaultBudgetRatio  = 0.2
	DefaultBudgetFloor  = 3 // retries per second
	DefaultBudgetWindow = 10 * time.Second
	budgetBuckets       = 10
)

// BudgetConfig sizes a Budget.
type BudgetConfig struct {
	// Ratio is the share of the requests over the window that may be
	// retried, 0 to 1 (0.2: one retry per five requests); -1: none (only
	// the floor). Default 0.2.
	Ratio float64
	// Floor is how many retries per second are allowed on top of the ratio,
	// so that a quiet route can still retry; -1: none. Default 3.
	Floor float64
	// Window is the span over which requests and retries are counted.
	// Default 10s.
	Window time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c BudgetConfig) WithDefaults() BudgetConfig {
	if c.Ratio == 0 {
		c.Ratio = DefaultBudgetRatio
	}
	if c.Floor == 0 {
		c.Floor = DefaultBudgetFloor
	}
	if c.Window == 0 {
		c.Window = DefaultBudgetWindow
	}
	return c
}

// Validate checks a config with its defaults applied.
func (c BudgetConfig) Validate() error {
	switch {
	case c.Ratio != -1 && !(c.Ratio > 0 && c.Ratio <= 1):
		return fmt.Errorf("%w: budget.ratio %v: allowed above 0 up to 1, or -1 for none", ErrConfig, c.Ratio)
	case c.Floor != -1 && !(c.Floor > 0 && c.Floor <= 1e6):
		return fmt.Errorf("%w: budget.floor %v: allowed above 0 up to 1000000 retries per second, or -1 for none", ErrConfig, c.Floor)
	case c.Window < budgetBuckets*time.Millisecond || c.Window > time.Hour:
		return fmt.Errorf("%w: budget.window %v: allowed 10ms to 1h", ErrConfig, c.Window)
	}
	return nil
}

// Budget counts a route's requests and retries over a sliding window and
// allows a retry while retries stay within Ratio × requests + Floor ×
// window seconds. Safe for concurrent use; time comes from the caller.
type Budget struct {
	cfg   BudgetConfig
	slice time.Duration
	ratio float64
	floor float64 // retries per window

	mu       sync.Mutex
	start    int64 // slice number of the newest bucket
	head     int
	requests [budgetBuckets]int64
	retries  [budgetBuckets]int64
}

// NewBudget returns an empty budget.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Budget{cfg: cfg, slice: cfg.Window / budgetBuckets, ratio: max(cfg.Ratio, 0)}
	b.floor = max(cfg.Floor, 0) * cfg.Window.Seconds()
	return b, nil
}

// Request counts one request (a first attempt).
func (b *Budget) Request(now time.Time) {
	b.mu.Lock()
	b.advance(now)
	b.requests[b.head]++
	b.mu.Unlock()
}

// Withdraw takes one retry from the budget, and reports false (taking
// nothing) when it is spent.
func (b *Budget) Withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance(now)
	var req, ret int64
	for i := range budgetBuckets {
		req += b.requests[i]
		ret += b.retries[i]
	}
	if float64(ret+1) > b.ratio*float64(req)+b.floor {
		return false
	}
	b.retries[b.head]++
	return true
}

func (b *Budget) advance(now time.Time) {
	n := now.UnixNano() / int64(b.slice)
	steps := n - b.start
	if steps <= 0 {
		return
	}
	if steps >= budgetBuckets {
		b.requests, b.retries = [budgetBuckets]int64{}, [budgetBuckets]int64{}
		b.start, b.head = n, 0
		return
	}
	for ; steps > 0; steps-- {
		b.head = (b.head + 1) % budgetBuckets
		b.requests[b.head], b.retries[b.head] = 0, 0
		b.start++
	}
}

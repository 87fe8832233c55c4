// Package retry decides whether a failed attempt at a backend is tried again,
// and when.
//
// A route's Policy says how many attempts a request gets, which failures are
// retried (a connect failure, a connection reset or closed before any
// response byte, a per-try timeout, chosen status codes), and for which
// requests: idempotent methods only unless the route allows the others, never
// once any part of the response went to the client (the proxy checks that),
// and only with a body it can send again (Buffer keeps up to a size in
// memory; a bigger or streamed body is sent once). Waits between attempts are
// exponential with full jitter, each attempt has its own timeout, and the
// whole request an overall deadline. A Budget caps retries at a share of the
// requests over a window plus a small floor, so that retries cannot multiply
// the load on pools that are already failing.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Defaults for Policy.
const (
	DefaultBodyLimit   = 64 << 10
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffMax  = 250 * time.Millisecond
	// MaxAttempts bounds Policy.Attempts.
	MaxAttempts = 10
)

// ErrConfig is returned, wrapped with the field and value, for a bad Policy
// or Budget config.
var ErrConfig = errors.New("invalid retry setting")

// Reason is why an attempt failed, as the config and the metrics name it.
type Reason string

// The retryable failures. A status code is retried when it is listed in
// Policy.Statuses (reason "status").
const (
	// ConnectFailure: no connection to the backend could be made; the
	// request surely did not reach it.
	ConnectFailure Reason = "connect_failure"
	// Reset: the connection broke (reset, closed) before any byte of a
	// response arrived.
	Reset Reason = "reset"
	// PerTryTimeout: the attempt's own timeout ended before the response
	// head arrived.
	PerTryTimeout Reason = "per_try_timeout"
	// Status: the backend answered with one of Policy.Statuses.
	Status Reason = "status"
)

// Reasons lists the reasons a policy may name in On, in documentation order.
var Reasons = []Reason{ConnectFailure, Reset, PerTryTimeout}

// Policy is one route's retry policy. The zero value retries nothing.
type Policy struct {
	// Attempts is the number of tries including the first, 1 to
	// MaxAttempts; 0 or 1: no retries.
	Attempts int
	// On lists the failures retried. Default (when Attempts > 1 and On is
	// empty): connect_failure, reset.
	On []Reason
	// Statuses lists response codes retried (e.g. 502, 503, 504).
	Statuses []int
	// NonIdempotent allows retrying POST, PATCH and other methods that are
	// not idempotent (RFC 9110 9.2.2); otherwise they are retried only when
	// they carry an Idempotency-Key. Default false.
	NonIdempotent bool
	// BodyLimit is the largest request body kept in memory to be sent
	// again; a bigger one (or one that does not end within it) is sent once
	// and the request is not retried. Default 64 KiB.
	BodyLimit int64
	// PerTryTimeout bounds each attempt up to the response head; 0: only
	// the overall deadline.
	PerTryTimeout time.Duration
	// Deadline bounds the whole request, attempts and waits; 0: only the
	// route's timeout.
	Deadline time.Duration
	// BackoffBase and BackoffMax set the wait before retry n: uniform in
	// [0, min(BackoffMax, BackoffBase × 2^(n-1))). Defaults 25ms and 250ms.
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// WithDefaults returns p with zero fields set to their defaults.
func (p Policy) WithDefaults() Policy {
	if p.Attempts > 1 && len(p.On) == 0 {
		p.On = []Reason{ConnectFailure, Reset}
	}
	if p.BodyLimit == 0 {
		p.BodyLimit = DefaultBodyLimit
	}
	if p.BackoffBase == 0 {
		p.BackoffBase = DefaultBackoffBase
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = DefaultBackoffMax
	}
	return p
}

// Validate checks a policy with its defaults applied; the error names the
// field as written in the proxy's YAML.
func (p Policy) Validate() error {
	if p.Attempts < 0 || p.Attempts > MaxAttempts {
		return fmt.Errorf("%w: attempts %d: allowed 1 to %d", ErrConfig, p.Attempts, MaxAttempts)
	}
	for _, r := range p.On {
		if !slices.Contains(Reasons, r) {
			names := make([]string, len(Reasons))
			for i, r := range Reasons {
				names[i] = string(r)
			}
			return fmt.Errorf("%w: on %q: allowed %s (status codes go in statuses)", ErrConfig, r, strings.Join(names, ", "))
		}
	}
	for _, s := range p.Statuses {
		if s < 500 || s > 599 {
			return fmt.Errorf("%w: statuses %d: allowed 500 to 599", ErrConfig, s)
		}
	}
	switch {
	case p.BodyLimit < 0 || p.BodyLimit > 16<<20:
		return fmt.Errorf("%w: body_limit %d: allowed 0 to 16 MiB", ErrConfig, p.BodyLimit)
	case p.PerTryTimeout < 0:
		return fmt.Errorf("%w: per_try_timeout %v: allowed 0 (none) or more", ErrConfig, p.PerTryTimeout)
	case p.Deadline < 0:
		return fmt.Errorf("%w: deadline %v: allowed 0 (the route's timeout) or more", ErrConfig, p.Deadline)
	case p.BackoffBase < 0:
		return fmt.Errorf("%w: backoff_base %v: allowed 0 or more", ErrConfig, p.BackoffBase)
	case p.BackoffMax < p.BackoffBase:
		return fmt.Errorf("%w: backoff_max %v: allowed backoff_base (%v) or more", ErrConfig, p.BackoffMax, p.BackoffBase)
	}
	return nil
}

// Enabled reports whether the policy retries anything.
func (p *Policy) Enabled() bool { return p.Attempts > 1 }

// Eligible reports whether a request of this method and header may be tried
// more than once: idempotent methods, others when the policy allows them or
// the request carries an idempotency key.
func (p *Policy) Eligible(method string, h http.Header) bool {
	if p.NonIdempotent || Idempotent(method) {
		return true
	}
	_, k1 := h["Idempotency-Key"]
	_, k2 := h["X-Idempotency-Key"]
	return k1 || k2
}

// Idempotent reports whether method is idempotent (RFC 9110 9.2.2).
func Idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// RetriesOn reports whether a failure for reason (with status, for Status)
// is retried.
func (p *Policy) RetriesOn(reason Reason, status int) bool {
	if reason == Status {
		return slices.Contains(p.Statuses, status)
	}
	return slices.Contains(p.On, reason)
}

// Backoff returns the wait before retry n (n = 1 for the first retry): full
// jitter, rnd in [0, 1) times min(BackoffMax, BackoffBase × 2^(n-1)).
func (p *Policy) Backoff(n int, rnd float64) time.Duration {
	ceil := p.BackoffMax
	if n < 1 {
		n = 1
	}
	if n <= 32 {
		if c := p.BackoffBase << (n - 1); c > 0 && c < ceil {
			ceil = c
		}
	}
	return time.Duration(rnd * float64(ceil))
}

// Rand is the source of Backoff's rnd outside tests.
func Rand() float64 { return rand.Float64() }

// Wait sleeps d unless ctx ends first or d would pass its deadline; it
// reports whether the wait completed (false: do not retry).
func Wait(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return false
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Package check runs active health checks against backends and keeps one
// health state machine per backend. It knows nothing of VIPs, administrative
// states or BPF: the L4 daemon (healthd) and the L7 proxy feed it targets and
// consume its events.
//
// # Checks
//
// A [Spec] describes one check: its [Kind] (tcp, http, https, udp), the
// host:port to probe (which may differ from the service port), the schedule
// and the thresholds. A TCP check passes when a connection is established
// (the probe then closes it with a reset, so the checker leaves no TIME_WAIT
// sockets behind). An HTTP(S) check sends one GET on a fresh connection and
// passes when the status is within [StatusMin, StatusMax] and, if set, the
// first 64 KiB of the body contain BodyContains. A UDP check sends Payload
// and passes when a reply arrives (containing Expect, if set); an ICMP port
// unreachable fails it at once.
//
// # Defaults
//
// A per-backend spec takes per-VIP settings with [Spec.Inherit];
// [Spec.WithDefaults] then fills the remaining zero fields. These are the
// only defaults:
//
//	Interval     2s    time between two checks of one target
//	Timeout      1s    a check not finished by then fails (at most Interval)
//	Rise         2     consecutive passes that make a target healthy
//	Fall         3     consecutive failures that make a target unhealthy
//	StatusMin    200   lowest passing HTTP status
//	StatusMax    399   highest passing HTTP status
//	Path         /     HTTP path
//	MaxFlaps     5     more transitions than this within FlapWindow hold a
//	                   target down (negative: no flap damping)
//	FlapWindow   60s
//	HoldDown     60s   a held-down target is released after this long
//	                   without a transition
//
// # States
//
// A target starts [Unknown] (or [Healthy] with StartHealthy). From Unknown,
// Rise consecutive passes make it Healthy and the first failure makes it
// Unhealthy; Unknown counts as not healthy. Then Fall consecutive failures
// take a Healthy target to Unhealthy and Rise consecutive passes take it
// back. [Machine] implements this, together with flap damping, as a pure type
// with no clock or network.
//
// Flap damping: when the state changes between healthy and unhealthy more
// than MaxFlaps times within FlapWindow, the target is held down: its State
// is Unhealthy and Damped is true, whatever its checks say, until HoldDown
// has passed without a further transition; then it takes the state its
// checks give.
//
// Every change of State or Damped is an [Event], delivered to
// [Config].OnEvent, and each target keeps its last results (time, latency,
// error) in [Status].History.
//
// # Scheduling
//
// A [Prober] runs all checks. Each target has a stable phase within its
// interval, derived from a hash of its ID, so targets are spread evenly over
// the interval, and adding, changing or removing one never moves the others.
// Each check starts at its slot plus a random jitter of up to ±Jitter of the
// interval (default 10%). At most Concurrency checks run at once; a check
// that hangs is cut at its Timeout, and a target whose previous check is
// still running skips its slot rather than queueing a second check. If the
// checker falls behind, missed slots are skipped, never run in a burst.
// The first check of a new target runs at its first slot, within one
// interval of [Prober.Set]. Check starts are grouped into ticks of
// Config.Resolution (default 5ms), so the Prober wakes once per tick.
//
// # Use
//
//	p := check.NewProber(check.Config{Logger: log, OnEvent: func(ev check.Event) { ... }})
//	err := p.Set("web-1", check.Spec{Kind: check.HTTP, Target: "198.51.100.11:8080"})
//	go p.Run(ctx) // until ctx is cancelled; Set and Remove work before and during Run
//	st, ok := p.Status("web-1")
//
// OnEvent and OnResult are called from the goroutine that ran the check: in
// order for each target, concurrently across targets. Tests drive a Prober with the fake clock of
// package checktest; check timeouts always use real time.
package check

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Kind is the protocol of a check.
type Kind string

// The kinds of check.
const (
	TCP   Kind = "tcp"   // connect
	HTTP  Kind = "http"  // GET, status range, optional body substring
	HTTPS Kind = "https" // HTTP over TLS, optionally without verification
	UDP   Kind = "udp"   // send Payload, expect a reply
)

// Kinds lists every valid Kind, in the order the documentation gives them.
var Kinds = []Kind{TCP, HTTP, HTTPS, UDP}

// Defaults applied by [Spec.WithDefaults] to fields left zero.
const (
	DefaultInterval   = 2 * time.Second
	DefaultTimeout    = 1 * time.Second
	DefaultRise       = 2
	DefaultFall       = 3
	DefaultStatusMin  = 200
	DefaultStatusMax  = 399
	DefaultPath       = "/"
	DefaultMaxFlaps   = 5
	DefaultFlapWindow = 60 * time.Second
	DefaultHoldDown   = 60 * time.Second
)

// Limits enforced by [Spec.Validate].
const (
	MinInterval  = 10 * time.Millisecond
	MaxInterval  = 1 * time.Hour
	MinTimeout   = 1 * time.Millisecond
	MaxThreshold = 100 // largest Rise or Fall
	MaxPayload   = 1024
)

// ErrInvalidSpec is wrapped by every error [Spec.Validate] returns.
var ErrInvalidSpec = errors.New("invalid health check")

// Spec describes the health check of one target. Zero fields take the
// defaults listed in the package documentation; see [Spec.WithDefaults].
type Spec struct {
	Kind     Kind          `json:"kind"`               // tcp, http, https or udp; required
	Target   string        `json:"target"`             // host:port to probe; required
	Interval time.Duration `json:"interval,omitempty"` // default 2s
	Timeout  time.Duration `json:"timeout,omitempty"`  // default 1s, at most Interval
	Rise     int           `json:"rise,omitempty"`     // default 2
	Fall     int           `json:"fall,omitempty"`     // default 3

	// HTTP and HTTPS only.
	Path               string `json:"path,omitempty"`                 // default "/"
	Host               string `json:"host,omitempty"`                 // Host header and TLS server name; default: Target's host
	StatusMin          int    `json:"status_min,omitempty"`           // default 200
	StatusMax          int    `json:"status_max,omitempty"`           // default 399
	BodyContains       string `json:"body_contains,omitempty"`        // if set, the body must contain it
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"` // HTTPS: accept any certificate

	// UDP only.
	Payload []byte `json:"payload,omitempty"` // sent in one datagram; may be empty
	Expect  []byte `json:"expect,omitempty"`  // if set, the reply must contain it

	// StartHealthy makes a new target Healthy instead of Unknown.
	StartHealthy bool `json:"start_healthy,omitempty"`

	// Flap damping.
	MaxFlaps   int           `json:"max_flaps,omitempty"`   // default 5; negative disables damping
	FlapWindow time.Duration `json:"flap_window,omitempty"` // default 60s
	HoldDown   time.Duration `json:"hold_down,omitempty"`   // default 60s
}

// WithDefaults returns s with every zero field set to its default.
func (s Spec) WithDefaults() Spec {
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = min(DefaultTimeout, s.Interval)
	}
	if s.Rise == 0 {
		s.Rise = DefaultRise
	}
	if s.Fall == 0 {
		s.Fall = DefaultFall
	}
	if s.Kind == HTTP || s.Kind == HTTPS {
		if s.Path == "" {
			s.Path = DefaultPath
		}
		if s.StatusMin == 0 {
			s.StatusMin = DefaultStatusMin
		}
		if s.StatusMax == 0 {
			s.StatusMax = DefaultStatusMax
		}
	}
	if s.MaxFlaps == 0 {
		s.MaxFlaps = DefaultMaxFlaps
	}
	if s.FlapWindow == 0 {
		s.FlapWindow = DefaultFlapWindow
	}
	if s.HoldDown == 0 {
		s.HoldDown = DefaultHoldDown
	}
	return s
}

// Validate reports the first field of s (after defaults are applied) that is
// not allowed, naming the field, its value and what is allowed. The error
// wraps [ErrInvalidSpec].
func (s Spec) Validate() error {
	s = s.WithDefaults()
	bad := func(field string, value any, allowed string) error {
		return fmt.Errorf("%w: %s %v: %s", ErrInvalidSpec, field, value, allowed)
	}
	switch s.Kind {
	case TCP, HTTP, HTTPS, UDP:
	default:
		return bad("kind", strconv.Quote(string(s.Kind)), "must be one of tcp, http, https, udp")
	}
	host, port, err := net.SplitHostPort(s.Target)
	if err != nil || host == "" {
		return bad("target", strconv.Quote(s.Target), "must be host:port, e.g. 198.51.100.10:8080 or [2001:db8:1::10]:80")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return bad("target", strconv.Quote(s.Target), "port must be a number from 1 to 65535")
	}
	if s.Interval < MinInterval || s.Interval > MaxInterval {
		return bad("interval", s.Interval, fmt.Sprintf("must be from %s to %s", MinInterval, MaxInterval))
	}
	if s.Timeout < MinTimeout || s.Timeout > s.Interval {
		return bad("timeout", s.Timeout, fmt.Sprintf("must be from %s to the interval (%s)", MinTimeout, s.Interval))
	}
	if s.Rise < 1 || s.Rise > MaxThreshold {
		return bad("rise", s.Rise, fmt.Sprintf("must be from 1 to %d", MaxThreshold))
	}
	if s.Fall < 1 || s.Fall > MaxThreshold {
		return bad("fall", s.Fall, fmt.Sprintf("must be from 1 to %d", MaxThreshold))
	}
	if s.FlapWindow < 0 {
		return bad("flap_window", s.FlapWindow, "must not be negative")
	}
	if s.HoldDown < 0 {
		return bad("hold_down", s.HoldDown, "must not be negative")
	}
	isHTTP := s.Kind == HTTP || s.Kind == HTTPS
	if isHTTP {
		if !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Path, " \r\n") {
			return bad("path", strconv.Quote(s.Path), "must start with / and contain no spaces or line breaks")
		}
		if strings.ContainsAny(s.Host, " \r\n/") {
			return bad("host", strconv.Quote(s.Host), "must be a host name with an optional :port")
		}
		if s.StatusMin < 100 || s.StatusMin > 599 {
			return bad("status_min", s.StatusMin, "must be from 100 to 599")
		}
		if s.StatusMax < s.StatusMin || s.StatusMax > 599 {
			return bad("status_max", s.StatusMax, fmt.Sprintf("must be from status_min (%d) to 599", s.StatusMin))
		}
	} else {
		switch {
		case s.Path != "":
			return bad("path", strconv.Quote(s.Path), "is only allowed for http and https checks")
		case s.Host != "":
			return bad("host", strconv.Quote(s.Host), "is only allowed for http and https checks")
		case s.StatusMin != 0 || s.StatusMax != 0:
			return bad("status_min/status_max", fmt.Sprintf("%d/%d", s.StatusMin, s.StatusMax), "are only allowed for http and https checks")
		case s.BodyContains != "":
			return bad("body_contains", strconv.Quote(s.BodyContains), "is only allowed for http and https checks")
		}
	}
	if s.InsecureSkipVerify && s.Kind != HTTPS {
		return bad("insecure_skip_verify", true, "is only allowed for https checks")
	}
	if s.Kind != UDP && (len(s.Payload) > 0 || len(s.Expect) > 0) {
		return bad("payload/expect", fmt.Sprintf("%d/%d bytes", len(s.Payload), len(s.Expect)), "are only allowed for udp checks")
	}
	if len(s.Payload) > MaxPayload {
		return bad("payload", fmt.Sprintf("%d bytes", len(s.Payload)), fmt.Sprintf("must be at most %d bytes", MaxPayload))
	}
	if len(s.Expect) > MaxPayload {
		return bad("expect", fmt.Sprintf("%d bytes", len(s.Expect)), fmt.Sprintf("must be at most %d bytes", MaxPayload))
	}
	return nil
}

// Inherit returns s with every zero field taken from d: per-backend checks
// inherit a per-VIP default this way. Booleans are set if set in either.
// Apply it before WithDefaults, so that the built-in defaults come last.
func (s Spec) Inherit(d Spec) Spec {
	pick := func(v *string, dv string) {
		if *v == "" {
			*v = dv
		}
	}
	pickInt := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	pickDur := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	if s.Kind == "" {
		s.Kind = d.Kind
	}
	pick(&s.Target, d.Target)
	pickDur(&s.Interval, d.Interval)
	pickDur(&s.Timeout, d.Timeout)
	pickInt(&s.Rise, d.Rise)
	pickInt(&s.Fall, d.Fall)
	pick(&s.Path, d.Path)
	pick(&s.Host, d.Host)
	pickInt(&s.StatusMin, d.StatusMin)
	pickInt(&s.StatusMax, d.StatusMax)
	pick(&s.BodyContains, d.BodyContains)
	s.InsecureSkipVerify = s.InsecureSkipVerify || d.InsecureSkipVerify
	if s.Payload == nil {
		s.Payload = d.Payload
	}
	if s.Expect == nil {
		s.Expect = d.Expect
	}
	s.StartHealthy = s.StartHealthy || d.StartHealthy
	pickInt(&s.MaxFlaps, d.MaxFlaps)
	pickDur(&s.FlapWindow, d.FlapWindow)
	pickDur(&s.HoldDown, d.HoldDown)
	return s
}

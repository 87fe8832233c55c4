package check

import (
	"fmt"
	"time"
)

// State is the health of one target.
type State uint8

// The health states. Only Healthy counts as healthy.
const (
	Unknown   State = iota // no decision yet: not healthy
	Healthy                // Rise consecutive passes
	Unhealthy              // Fall consecutive failures, the first failure from Unknown, or held down
)

var stateNames = [...]string{Unknown: "unknown", Healthy: "healthy", Unhealthy: "unhealthy"}

// String returns "unknown", "healthy" or "unhealthy".
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText encodes the state as its name, for JSON.
func (s State) MarshalText() ([]byte, error) {
	if int(s) >= len(stateNames) {
		return nil, fmt.Errorf("encode health state %d: no such state", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name written by MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("decode health state %q: must be unknown, healthy or unhealthy", b)
}

// Event is a change of a target's State or Damped flag.
type Event struct {
	ID     string    `json:"id"`
	From   State     `json:"from"`
	To     State     `json:"to"`
	Damped bool      `json:"damped"`        // held down after the event
	Reason string    `json:"reason"`        // why, for people
	Err    string    `json:"err,omitempty"` // error of the check that caused it, if it failed
	Time   time.Time `json:"time"`
}

// Machine is the health state machine of one target, with flap damping. It
// has no clock and does no I/O: the caller passes the time of every result.
// The zero Machine is not usable; create one with [NewMachine]. A Machine is
// not safe for concurrent use.
type Machine struct {
	spec   Spec
	raw    State // what the checks say, before damping
	damped bool
	since  time.Time // when State last changed
	passes int       // consecutive passes
	fails  int       // consecutive failures
	flaps  []time.Time
	moved  time.Time // last change of raw between healthy and unhealthy
}

// NewMachine returns a machine in its initial state at time now: Unknown, or
// Healthy if spec.StartHealthy. Zero thresholds in spec take the defaults.
func NewMachine(spec Spec, now time.Time) *Machine {
	m := &Machine{spec: spec.WithDefaults(), since: now}
	if spec.StartHealthy {
		m.raw = Healthy
	}
	return m
}

// SetSpec changes the thresholds and damping settings; the state and the
// counts of consecutive results are kept.
func (m *Machine) SetSpec(spec Spec) { m.spec = spec.WithDefaults() }

// State returns the effective state: Unhealthy while held down.
func (m *Machine) State() State {
	if m.damped {
		return Unhealthy
	}
	return m.raw
}

// Damped reports whether the target is held down for flapping.
func (m *Machine) Damped() bool { return m.damped }

// Since returns when State last changed (or when the machine was made).
func (m *Machine) Since() time.Time { return m.since }

// Counts returns the numbers of consecutive passes and failures; one of them
// is zero.
func (m *Machine) Counts() (passes, fails int) { return m.passes, m.fails }

// Observe feeds one check result taken at time now (errText is "" for a
// pass) and returns the event it caused, if State or Damped changed. The
// event's ID is left empty.
func (m *Machine) Observe(now time.Time, errText string) (Event, bool) {
	pass := errText == ""
	if pass {
		m.passes, m.fails = m.passes+1, 0
	} else {
		m.passes, m.fails = 0, m.fails+1
	}
	from, wasDamped := m.State(), m.damped
	next, reason := m.raw, ""
	switch {
	case m.raw == Unknown && !pass:
		next, reason = Unhealthy, "first check failed"
	case m.raw != Healthy && pass && m.passes >= m.spec.Rise:
		next, reason = Healthy, fmt.Sprintf("%d consecutive checks passed", m.passes)
	case m.raw == Healthy && !pass && m.fails >= m.spec.Fall:
		next, reason = Unhealthy, fmt.Sprintf("%d consecutive checks failed", m.fails)
	}
	if next != m.raw {
		flip := m.raw != Unknown
		m.raw = next
		if flip && m.spec.MaxFlaps >= 0 {
			m.moved = now
			m.flaps = append(m.flaps, now)
			cut := 0
			for cut < len(m.flaps) && now.Sub(m.flaps[cut]) > m.spec.FlapWindow {
				cut++
			}
			m.flaps = append(m.flaps[:0], m.flaps[cut:]...)
			if !m.damped && len(m.flaps) > m.spec.MaxFlaps {
				m.damped = true
				reason += fmt.Sprintf("; flapping: %d state changes within %s, held down until stable for %s",
					len(m.flaps), m.spec.FlapWindow, m.spec.HoldDown)
			}
		}
	} else if m.damped && now.Sub(m.moved) >= m.spec.HoldDown {
		m.damped = false
		m.flaps = m.flaps[:0]
		reason = fmt.Sprintf("no state change for %s: hold-down ended", m.spec.HoldDown)
	}
	to := m.State()
	if to == from && m.damped == wasDamped {
		return Event{}, false
	}
	if to != from {
		m.since = now
	}
	return Event{From: from, To: to, Damped: m.damped, Reason: reason, Err: errText, Time: now}, true
}

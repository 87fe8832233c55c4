package check_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
)

// code writes a machine's state as one letter: ? unknown, H healthy,
// X unhealthy, D held down.
func code(m *check.Machine) byte {
	switch {
	case m.Damped():
		return 'D'
	case m.State() == check.Healthy:
		return 'H'
	case m.State() == check.Unhealthy:
		return 'X'
	}
	return '?'
}

func TestMachine(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	noDamp := check.Spec{Rise: 2, Fall: 3, MaxFlaps: -1}
	tests := []struct {
		name   string
		spec   check.Spec
		input  string // one result per second: p pass, f fail, . a gap of one second with no result
		states string // state after each result (gaps included, repeating the state)
		events []string
	}{
		{"unknown to healthy after rise passes", noDamp, "ppp", "?HH", []string{"unknown>healthy:2 consecutive checks passed"}},
		{"unknown to unhealthy at the first failure", noDamp, "fpp", "XXH",
			[]string{"unknown>unhealthy:first check failed", "unhealthy>healthy:2 consecutive checks passed"}},
		{"a failure resets the rise count", noDamp, "pfpp", "?XXH",
			[]string{"unknown>unhealthy:first check failed", "unhealthy>healthy:2 consecutive checks passed"}},
		{"fall needs consecutive failures", noDamp, "ppffpfff", "?HHHHHHX",
			[]string{"unknown>healthy:2 consecutive checks passed", "healthy>unhealthy:3 consecutive checks failed"}},
		{"rise needs consecutive passes", noDamp, "ppfffpfpp", "?HHHXXXXH", []string{
			"unknown>healthy:2 consecutive checks passed",
			"healthy>unhealthy:3 consecutive checks failed",
			"unhealthy>healthy:2 consecutive checks passed"}},
		{"start healthy", check.Spec{Rise: 2, Fall: 3, MaxFlaps: -1, StartHealthy: true}, "pffpfff", "HHHHHHX",
			[]string{"healthy>unhealthy:3 consecutive checks failed"}},
		{"rise 1 fall 1", check.Spec{Rise: 1, Fall: 1, MaxFlaps: -1}, "pfpf", "HXHX", []string{
			"unknown>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed",
			"unhealthy>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed"}},
		{
			// Flips at t=1,2,3 (3 > MaxFlaps 2 within 10s): held down. More
			// flips keep it down; released after 5s with no flip.
			name:   "flap damping holds down until stable",
			spec:   check.Spec{Rise: 1, Fall: 1, MaxFlaps: 2, FlapWindow: 10 * time.Second, HoldDown: 5 * time.Second},
			input:  "pfpfppppp" + "ppp",
			states: "HXHDDDDDD" + "HHH",
			events: []string{
				"unknown>healthy:1 consecutive checks passed",
				"healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed",
				"healthy>unhealthy+damped:1 consecutive checks failed; flapping: 3 state changes within 10s, held down until stable for 5s",
				"unhealthy>healthy:no state change for 5s: hold-down ended",
			},
		},
		{
			name:   "released while still failing stays unhealthy",
			spec:   check.Spec{Rise: 1, Fall: 1, MaxFlaps: 1, FlapWindow: 10 * time.Second, HoldDown: 3 * time.Second},
			input:  "pfpfffff",
			states: "HXDDDDXX",
			events: []string{
				"unknown>healthy:1 consecutive checks passed",
				"healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>unhealthy+damped:1 consecutive checks passed; flapping: 2 state changes within 10s, held down until stable for 3s",
				"unhealthy>unhealthy:no state change for 3s: hold-down ended",
			},
		},
		{
			name:   "flips spread wider than the window are not flapping",
			spec:   check.Spec{Rise: 1, Fall: 1, MaxFlaps: 2, FlapWindow: 3 * time.Second, HoldDown: time.Minute},
			input:  "pf..p..f..p",
			states: "HXXXHHHXXXH",
			events: []string{
				"unknown>healthy:1 consecutive checks passed",
				"healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed",
				"healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed",
			},
		},
		{
			name:   "damping disabled",
			spec:   check.Spec{Rise: 1, Fall: 1, MaxFlaps: -1},
			input:  "pfpfpfpf",
			states: "HXHXHXHX",
			events: []string{
				"unknown>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed",
				"unhealthy>healthy:1 consecutive checks passed", "healthy>unhealthy:1 consecutive checks failed",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := check.NewMachine(tt.spec, t0)
			var states []byte
			var events []string
			for i, c := range []byte(tt.input) {
				now := t0.Add(time.Duration(i+1) * time.Second)
				if c != '.' {
					errText := ""
					if c == 'f' {
						errText = "refused"
					}
					ev, ok := m.Observe(now, errText)
					if ok {
						s := ev.From.String() + ">" + ev.To.String()
						if ev.Damped {
							s += "+damped"
						}
						events = append(events, s+":"+ev.Reason)
						if !ev.Time.Equal(now) || ev.Err != errText {
							t.Errorf("event %q: time %v err %q, want %v %q", s, ev.Time, ev.Err, now, errText)
						}
						if ev.To != ev.From && !m.Since().Equal(now) {
							t.Errorf("Since() = %v after a change at %v", m.Since(), now)
						}
					}
				}
				states = append(states, code(m))
			}
			if string(states) != tt.states {
				t.Errorf("states = %s, want %s", states, tt.states)
			}
			if strings.Join(events, "\n") != strings.Join(tt.events, "\n") {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(tt.events, "\n"))
			}
		})
	}
}

func TestMachineCountsAndSetSpec(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := check.NewMachine(check.Spec{Rise: 3, Fall: 3}, t0)
	m.Observe(t0, "")
	m.Observe(t0, "")
	if p, f := m.Counts(); p != 2 || f != 0 {
		t.Fatalf("Counts() = %d, %d; want 2, 0", p, f)
	}
	// Lowering rise keeps the count: the next pass crosses it.
	m.SetSpec(check.Spec{Rise: 1, Fall: 3})
	if m.State() != check.Unknown {
		t.Fatalf("SetSpec changed the state to %v", m.State())
	}
	if ev, ok := m.Observe(t0, ""); !ok || ev.To != check.Healthy || ev.Reason != "3 consecutive checks passed" {
		t.Fatalf("Observe after SetSpec = %+v, %v; want healthy by 3 passes", ev, ok)
	}
	m.Observe(t0, "x")
	if p, f := m.Counts(); p != 0 || f != 1 {
		t.Fatalf("Counts() = %d, %d; want 0, 1", p, f)
	}
}

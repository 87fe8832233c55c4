package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/healthd/check/checktest"
	"github.com/xlb-project/xlb/internal/testutil"
)

// switchable is a TCP backend the test takes down (closes the listener,
// connects are refused) and brings up again on the same port.
type switchable struct {
	t    *testing.T
	addr string
	ln   net.Listener
}

func newSwitchable(t *testing.T) *switchable {
	s := &switchable{t: t}
	s.up()
	s.addr = s.ln.Addr().String()
	t.Cleanup(s.down)
	return s
}

func (s *switchable) up() {
	s.t.Helper()
	if s.ln != nil {
		return
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("listen on %s: %v", addr, err)
	}
	s.ln = ln
	go closeAccepted(ln, nil)
}

func (s *switchable) down() {
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// set brings the backend up for 'u' and down for 'd'.
func (s *switchable) set(c byte) {
	if c == 'u' {
		s.up()
	} else {
		s.down()
	}
}

func stateCode(st check.Status) byte {
	switch {
	case st.Damped:
		return 'D'
	case st.State == check.Healthy:
		return 'H'
	case st.State == check.Unhealthy:
		return 'X'
	}
	return '?'
}

func eventText(evs []check.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s %s>%s", ev.ID, ev.From, ev.To)
		if ev.Damped {
			b.WriteString("+damped")
		}
		b.WriteString(";")
	}
	return b.String()
}

func TestProberRiseFall(t *testing.T) {
	// An HTTP backend that answers 200 ('u'), 500 ('5') or is down ('d').
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	down := closedPort(t)

	tests := []struct {
		name    string
		spec    check.Spec
		backend string // one step per letter: u answers 200, 5 answers 500, d refuses
		states  string // ? unknown, H healthy, X unhealthy, D held down; after each step
		events  string
	}{
		{"rise 2", check.Spec{Rise: 2, Fall: 3}, "uuu", "?HH", "b unknown>healthy;"},
		{"fall 3 by 500s", check.Spec{Rise: 2, Fall: 3}, "uu55u555", "?HHHHHHX", "b unknown>healthy;b healthy>unhealthy;"},
		{"fall 3 by refusals", check.Spec{Rise: 2, Fall: 3}, "uudddu", "?HHHXX", "b unknown>healthy;b healthy>unhealthy;"},
		{"first failure is unhealthy", check.Spec{Rise: 3, Fall: 3}, "5uu5uuu", "XXXXXXH", "b unknown>unhealthy;b unhealthy>healthy;"},
		{"start healthy", check.Spec{Rise: 2, Fall: 2, StartHealthy: true}, "u5u55uu", "HHHHXXH", "b healthy>unhealthy;b unhealthy>healthy;"},
		{"rise 1 fall 1", check.Spec{Rise: 1, Fall: 1, MaxFlaps: -1}, "u5udu", "HXHXH",
			"b unknown>healthy;b healthy>unhealthy;b unhealthy>healthy;b healthy>unhealthy;b unhealthy>healthy;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, check.Config{})
			spec := tt.spec
			spec.Kind, spec.Target, spec.Interval = check.HTTP, srv.Listener.Addr().String(), time.Second
			r.set(t, "b", spec)
			if st, _ := r.p.Status("b"); stateCode(st) != tt.states[0] && !spec.StartHealthy && stateCode(st) != '?' {
				t.Fatalf("initial state %v", st.State)
			}
			r.start(t)
			var states []byte
			for i, c := range []byte(tt.backend) {
				target := srv.Listener.Addr().String()
				switch c {
				case 'u':
					status.Store(200)
				case '5':
					status.Store(500)
				case 'd':
					target = down
				}
				if target != spec.Target {
					spec.Target = target
					r.set(t, "b", spec)
				}
				res := r.step(t, time.Second, "b")["b"]
				if (c == 'u') != (res.Err == "") {
					t.Fatalf("step %d (%c): result %+v", i, c, res)
				}
				st, _ := r.p.Status("b")
				states = append(states, stateCode(st))
			}
			if string(states) != tt.states {
				t.Errorf("states = %s, want %s", states, tt.states)
			}
			if got := eventText(r.drainEvents()); got != tt.events {
				t.Errorf("events = %s, want %s", got, tt.events)
			}
		})
	}
}

func TestProberUpDownEventsAndHistory(t *testing.T) {
	b := newSwitchable(t)
	r := newRig(t, check.Config{History: 3})
	r.set(t, "b", check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second, Rise: 1, Fall: 2, MaxFlaps: -1})
	r.start(t)

	for _, c := range []byte("uudd") {
		b.set(c)
		r.step(t, time.Second, "b")
	}
	evs := r.drainEvents()
	if got := eventText(evs); got != "b unknown>healthy;b healthy>unhealthy;" {
		t.Fatalf("events = %s", got)
	}
	down := evs[1]
	if down.Reason != "2 consecutive checks failed" || !strings.Contains(down.Err, "connection refused") {
		t.Errorf("down event = %+v", down)
	}
	st, _ := r.p.Status("b")
	if st.State != check.Unhealthy || st.Fails != 2 || st.Passes != 0 || st.Checks != 4 || !st.Since.Equal(down.Time) {
		t.Errorf("status = %+v", st)
	}
	b.up()
	r.step(t, time.Second, "b")
	st, _ = r.p.Status("b")
	// History keeps the last 3 results, oldest first: fail, fail, pass.
	if len(st.History) != 3 || st.History[0].Err == "" || st.History[1].Err == "" || st.History[2].Err != "" {
		t.Fatalf("history = %+v", st.History)
	}
	for i := 1; i < len(st.History); i++ {
		if st.History[i].Time.Sub(st.History[i-1].Time) != time.Second {
			t.Errorf("history times %v then %v, want 1s apart", st.History[i-1].Time, st.History[i].Time)
		}
	}
	if st.State != check.Healthy || !strings.Contains(st.LastErr, "connection refused") {
		t.Errorf("after recovery: state %v, last error %q (want the last failure kept)", st.State, st.LastErr)
	}
}

func TestProberFlapDamping(t *testing.T) {
	b := newSwitchable(t)
	r := newRig(t, check.Config{})
	r.set(t, "b", check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second, Rise: 1, Fall: 1,
		MaxFlaps: 2, FlapWindow: time.Minute, HoldDown: 4 * time.Second})
	r.start(t)

	var states []byte
	for _, c := range []byte("ududu" + "uuuu") {
		b.set(c)
		r.step(t, time.Second, "b")
		st, _ := r.p.Status("b")
		states = append(states, stateCode(st))
	}
	if want := "HXHDD" + "DDDH"; string(states) != want {
		t.Errorf("states = %s, want %s", states, want)
	}
	evs := r.drainEvents()
	if got, want := eventText(evs), "b unknown>healthy;b healthy>unhealthy;b unhealthy>healthy;b healthy>unhealthy+damped;b unhealthy>healthy;"; got != want {
		t.Fatalf("events = %s, want %s", got, want)
	}
	if !strings.Contains(evs[3].Reason, "flapping") || !strings.Contains(evs[4].Reason, "hold-down ended") {
		t.Errorf("reasons: %q, %q", evs[3].Reason, evs[4].Reason)
	}
}

func TestProberAddChangeRemoveWhileRunning(t *testing.T) {
	b := newSwitchable(t)
	r := newRig(t, check.Config{})
	spec := check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second, Rise: 1}
	r.set(t, "a", spec)
	r.set(t, "b", spec)
	r.start(t)
	r.step(t, time.Second, "a", "b")

	next := func(id string) time.Time { st, _ := r.p.Status(id); return st.Next }
	nextA, nextB := next("a"), next("b")

	// Adding c does not move a or b, and c is checked in the next round.
	r.set(t, "c", spec)
	if next("a") != nextA || next("b") != nextB {
		t.Fatal("adding a target moved the others")
	}
	r.step(t, time.Second, "a", "b", "c")

	// Removing b: no more results from it (step fails on one), others stay.
	nextA, nextC := next("a"), next("c")
	r.p.Remove("b")
	r.p.Remove("nonexistent")
	if _, ok := r.p.Status("b"); ok {
		t.Fatal("Status(b) found after Remove")
	}
	if next("a") != nextA || next("c") != nextC {
		t.Fatal("removing a target moved the others")
	}
	r.step(t, time.Second, "a", "c")

	// Changing a's check but not its interval keeps its slot and its state.
	nextA = next("a")
	changed := spec
	changed.Timeout, changed.Fall = 500*time.Millisecond, 5
	r.set(t, "a", changed)
	st, _ := r.p.Status("a")
	if st.Next != nextA || st.State != check.Healthy || st.Spec.Fall != 5 || st.Checks != 3 {
		t.Fatalf("after change: %+v (next was %v)", st, nextA)
	}
	// Changing the interval moves a's slot, only a's.
	nextC = next("c")
	changed.Interval = 3 * time.Second
	r.set(t, "a", changed)
	if d := next("a").Sub(r.clock.Now()); d <= 0 || d > 3*time.Second || next("c") != nextC {
		t.Fatalf("interval change: next(a) in %v, next(c) %v (was %v)", d, next("c"), nextC)
	}
	if got := r.p.Statuses(); len(got) != 2 || got[0].ID != "a" || got[1].ID != "c" {
		t.Fatalf("Statuses() = %+v", got)
	}
	// An invalid change is refused and changes nothing.
	bad := changed
	bad.Rise = -1
	if err := r.p.Set("a", bad); !errors.Is(err, check.ErrInvalidSpec) || !strings.Contains(err.Error(), "rise -1") {
		t.Fatalf("Set(invalid) = %v", err)
	}
	if st, _ := r.p.Status("a"); st.Spec.Rise != 1 {
		t.Fatalf("invalid Set changed the spec: %+v", st.Spec)
	}
	if err := r.p.Set("", spec); !errors.Is(err, check.ErrInvalidID) {
		t.Fatalf("Set(\"\") = %v, want ErrInvalidID", err)
	}
}

func TestProberSlowCheckDoesNotDelayOthers(t *testing.T) {
	hung, accepted := hangListener(t)
	b := newSwitchable(t)
	r := newRig(t, check.Config{Concurrency: 4})
	// The hung check may run for its whole (long) timeout.
	r.set(t, "hung", check.Spec{Kind: check.HTTP, Target: hung, Interval: time.Hour, Timeout: time.Hour})
	r.set(t, "fast", check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Hour})
	r.start(t)

	// One interval: both are started; fast finishes while hung hangs.
	res := r.step(t, time.Hour, "fast")
	if res["fast"].Err != "" {
		t.Fatalf("fast check failed: %s", res["fast"].Err)
	}
	for deadline := time.Now().Add(wait); accepted() == 0 || r.p.Stats().InFlight != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hung check never started: accepted %d, stats %+v", accepted(), r.p.Stats())
		}
	}
	// Stopping the prober cancels the hung check; its result is dropped.
	r.stop()
	if st := r.p.Stats(); st.InFlight != 0 || st.Checks != 1 {
		t.Fatalf("after stop: %+v", st)
	}
	if st, _ := r.p.Status("hung"); st.Checks != 0 || st.State != check.Unknown {
		t.Fatalf("hung target after stop: %+v", st)
	}
}

func TestProberTimeoutCutsHungCheck(t *testing.T) {
	hung, _ := hangListener(t)
	r := newRig(t, check.Config{})
	r.set(t, "b", check.Spec{Kind: check.HTTP, Target: hung, Interval: time.Second, Timeout: 50 * time.Millisecond})
	r.start(t)
	res := r.step(t, time.Second, "b")["b"]
	if res.Err != "timeout after 50ms" {
		t.Fatalf("result = %+v, want a timeout", res)
	}
	if got := eventText(r.drainEvents()); got != "b unknown>unhealthy;" {
		t.Fatalf("events = %s", got)
	}
}

func TestProberConcurrencyBound(t *testing.T) {
	const limit, targets = 2, 6
	gate := make(chan struct{})
	var mu sync.Mutex
	active, maxActive := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		active++
		maxActive = max(maxActive, active)
		mu.Unlock()
		<-gate
		mu.Lock()
		active--
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	r := newRig(t, check.Config{Concurrency: limit})
	var ids []string
	for i := range targets {
		id := fmt.Sprintf("b%d", i)
		ids = append(ids, id)
		r.set(t, id, check.Spec{Kind: check.HTTP, Target: srv.Listener.Addr().String(), Interval: time.Hour, Timeout: time.Hour})
	}
	r.start(t)
	r.clock.Advance(time.Hour)
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		a := active
		mu.Unlock()
		if a == limit && r.p.Stats().InFlight == limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checks in flight never reached %d: %+v", limit, r.p.Stats())
		}
	}
	close(gate)
	r.step(t, 0, ids...)
	mu.Lock()
	defer mu.Unlock()
	if maxActive != limit {
		t.Fatalf("at most %d checks ran at once, want %d", maxActive, limit)
	}
}

func TestProberSpread(t *testing.T) {
	const n = 2000
	interval := time.Second
	// next returns when each target is first due, after start.
	next := func(jitter float64, advance time.Duration) map[string]time.Time {
		r := newRig(t, check.Config{Jitter: jitter})
		r.clock.Advance(advance)
		for i := range n {
			r.set(t, fmt.Sprintf("backend-%d", i), check.Spec{Kind: check.TCP, Target: "127.0.0.1:9", Interval: interval})
		}
		out := make(map[string]time.Time, n)
		for _, st := range r.p.Statuses() {
			out[st.ID] = st.Next
		}
		return out
	}
	start := checktest.NewClock(time.Unix(1_700_000_000, 0)).Now()
	exact := next(check.NoJitter, 0)
	later := next(check.NoJitter, 3700*time.Millisecond) // another prober, started later
	jittered := next(0.1, 0)

	var buckets [10]int
	for id, at := range exact {
		off := at.Sub(start)
		if off <= 0 || off > interval {
			t.Fatalf("%s: first check %v after start, want within (0, %v]", id, off, interval)
		}
		buckets[(off*10-1)/interval]++
		// The phase is stable: the same offset within the interval.
		if d := later[id].Sub(at); d%interval != 0 {
			t.Fatalf("%s: slot moved by %v between probers", id, d%interval)
		}
		if d := jittered[id].Sub(at); d < -interval/10 || d > interval/10 {
			t.Fatalf("%s: jitter %v, want within ±%v", id, d, interval/10)
		}
	}
	// Even spread: each tenth of the interval holds about n/10 targets.
	for i, c := range buckets {
		if c < n/10/2 || c > n/10*3/2 {
			t.Errorf("tenth %d of the interval holds %d of %d targets; buckets %v", i, c, n, buckets)
		}
	}
	// Jitter really moves checks: nearly all are off their slot.
	moved := 0
	for id := range exact {
		if !jittered[id].Equal(exact[id]) {
			moved++
		}
	}
	if moved < n*9/10 {
		t.Errorf("only %d of %d checks jittered", moved, n)
	}
}

func TestProberRunTwice(t *testing.T) {
	r := newRig(t, check.Config{})
	r.start(t)
	if err := r.p.Run(context.Background()); !errors.Is(err, check.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

func TestProberNoBurstWhenSetLongBeforeRun(t *testing.T) {
	b := newSwitchable(t)
	r := newRig(t, check.Config{})
	for _, id := range []string{"a", "b", "c"} {
		r.set(t, id, check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second})
	}
	r.clock.Advance(10 * time.Second) // slots pass before Run starts
	r.start(t)
	// Nothing is due right away: each waits for its next slot.
	for _, st := range r.p.Statuses() {
		if !st.Next.After(r.clock.Now()) {
			t.Fatalf("%s due at %v, not after now %v", st.ID, st.Next, r.clock.Now())
		}
	}
	r.step(t, time.Second, "a", "b", "c")
}

func TestProberLogsAndJSON(t *testing.T) {
	var buf syncBuffer
	b := newSwitchable(t)
	r := newRig(t, check.Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	r.set(t, "web-1", check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second, Rise: 1})
	r.start(t)
	r.step(t, time.Second, "web-1")
	if got := buf.String(); !strings.Contains(got, "health state changed") || !strings.Contains(got, "backend=web-1") ||
		!strings.Contains(got, "from=unknown") || !strings.Contains(got, "to=healthy") {
		t.Fatalf("log = %q", got)
	}
	st, _ := r.p.Status("web-1")
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatalf("encode status: %v", err)
	}
	for _, want := range []string{`"id":"web-1"`, `"state":"healthy"`, `"damped":false`, `"kind":"tcp"`, `"history":[{`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("status JSON %s lacks %s", js, want)
		}
	}
	var back check.Status
	if err := json.Unmarshal(js, &back); err != nil || back.State != check.Healthy || len(back.History) != 1 {
		t.Errorf("decode status: %v, %+v", err, back)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProberSkipsSlotWhileCheckRuns(t *testing.T) {
	gate := make(chan struct{})
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		<-gate
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	r := newRig(t, check.Config{})
	r.set(t, "b", check.Spec{Kind: check.HTTP, Target: srv.Listener.Addr().String(), Interval: time.Hour, Timeout: time.Hour})
	r.start(t)
	r.clock.Advance(time.Hour) // the first check starts and hangs
	for deadline := time.Now().Add(wait); requests.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("first check never reached the backend")
		}
	}
	r.clock.Advance(time.Hour) // its next slot comes while it still runs
	for deadline := time.Now().Add(wait); r.p.Stats().Skipped == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("slot not skipped: %+v", r.p.Stats())
		}
	}
	close(gate)
	res := r.step(t, 0, "b")["b"]
	if res.Err != "" {
		t.Fatalf("check failed: %s", res.Err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("backend saw %d checks, want 1 (the second slot is skipped, not queued)", n)
	}
	// The schedule goes on: the next slot runs normally.
	r.step(t, time.Hour, "b")
	if st := r.p.Stats(); st.Checks != 2 || st.Skipped != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestProberRunAgainAfterStop(t *testing.T) {
	b := newSwitchable(t)
	r := newRig(t, check.Config{})
	r.set(t, "b", check.Spec{Kind: check.TCP, Target: b.addr, Interval: time.Second, Rise: 1})
	r.start(t)
	r.step(t, time.Second, "b")
	r.stop()
	r.clock.Advance(10 * time.Second) // slots pass while stopped: no burst afterwards
	r.start(t)
	r.step(t, time.Second, "b")
	if st, _ := r.p.Status("b"); st.Checks != 2 || st.State != check.Healthy {
		t.Fatalf("status after restart: %+v", st)
	}
}

// A callback may call the Prober: here it removes a target that failed.
func TestProberCallbackMayCallProber(t *testing.T) {
	closed := closedPort(t)
	clock := checktest.NewClock(time.Unix(1_700_000_000, 0))
	results := make(chan string, 10)
	var p *check.Prober
	p = check.NewProber(check.Config{Clock: clock, Jitter: check.NoJitter,
		OnEvent: func(ev check.Event) {
			if ev.To == check.Unhealthy {
				p.Remove(ev.ID)
				_ = p.Set(ev.ID+"-replacement", check.Spec{Kind: check.TCP, Target: closed, Interval: time.Second})
			}
		},
		OnResult: func(id string, _ check.Result) { results <- id },
	})
	if err := p.Set("b", check.Spec{Kind: check.TCP, Target: closed, Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, wait, "Run arming its timer", func() bool { return clock.Armed() > 0 })
	clock.Advance(time.Second)
	select {
	case <-results:
	case <-time.After(wait):
		t.Fatal("no result")
	}
	if _, ok := p.Status("b"); ok {
		t.Fatal("b not removed by the callback")
	}
	if _, ok := p.Status("b-replacement"); !ok {
		t.Fatal("replacement not added by the callback")
	}
}

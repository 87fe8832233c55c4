package check_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/healthd/check/checktest"
	"github.com/xlb-project/xlb/internal/testutil"
)

// wait bounds how long a test waits for something that should happen: it
// only turns a hang into a failure and is never a speed assertion.
const wait = 10 * time.Second

type result struct {
	id string
	r  check.Result
}

// rig runs a Prober on a fake clock and collects its results and events.
type rig struct {
	clock   *checktest.Clock
	p       *check.Prober
	results chan result
	events  chan check.Event
	cancel  context.CancelFunc
	done    chan error
}

func newRig(t *testing.T, cfg check.Config) *rig {
	t.Helper()
	r := &rig{
		clock:   checktest.NewClock(time.Unix(1_700_000_000, 0)),
		results: make(chan result, 10000),
		events:  make(chan check.Event, 10000),
		done:    make(chan error, 1),
	}
	cfg.Clock = r.clock
	if cfg.Jitter == 0 {
		cfg.Jitter = check.NoJitter
	}
	cfg.OnResult = func(id string, res check.Result) { r.results <- result{id, res} }
	cfg.OnEvent = func(ev check.Event) { r.events <- ev }
	r.p = check.NewProber(cfg)
	return r
}

// start runs the prober until the test ends.
func (r *rig) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.p.Run(ctx) }()
	t.Cleanup(r.stop)
	// Run arms its timer once it has placed the targets.
	testutil.Eventually(t, wait, "Run arming its timer", func() bool { return r.clock.Armed() > 0 })
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	<-r.done
}

func (r *rig) set(t *testing.T, id string, s check.Spec) {
	t.Helper()
	if err := r.p.Set(id, s); err != nil {
		t.Fatalf("Set(%s): %v", id, err)
	}
}

// step advances the clock by d and returns the result of each id, waiting
// for all of them; it fails on a result of any other target.
func (r *rig) step(t *testing.T, d time.Duration, ids ...string) map[string]check.Result {
	t.Helper()
	r.clock.Advance(d)
	return r.collect(t, ids...)
}

// collect waits for the result of each id; it fails on a result of any
// other target.
func (r *rig) collect(t *testing.T, ids ...string) map[string]check.Result {
	t.Helper()
	got := make(map[string]check.Result)
	want := make(map[string]bool)
	for _, id := range ids {
		want[id] = true
	}
	timeout := time.After(wait)
	for len(got) < len(ids) {
		select {
		case res := <-r.results:
			if !want[res.id] {
				t.Fatalf("unexpected result of %s: %+v", res.id, res.r)
			}
			if _, dup := got[res.id]; dup {
				t.Fatalf("two results of %s in one step", res.id)
			}
			got[res.id] = res.r
		case <-timeout:
			t.Fatalf("waited %s for results of %v, got %v", wait, ids, got)
		}
	}
	return got
}

// drainEvents returns the events sent so far.
func (r *rig) drainEvents() []check.Event {
	var out []check.Event
	for {
		select {
		case ev := <-r.events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// probeOnce runs one check of s and returns its result.
func probeOnce(t *testing.T, s check.Spec) check.Result {
	t.Helper()
	r := newRig(t, check.Config{})
	if s.Interval == 0 {
		s.Interval = time.Hour
	}
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Second
	}
	r.set(t, "b", s)
	r.start(t)
	return r.step(t, s.Interval, "b")["b"]
}

// closeAccepted accepts connections on ln and closes each at once, calling
// accepted (when not nil) after each, until ln is closed.
func closeAccepted(ln net.Listener, accepted func()) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
		if accepted != nil {
			accepted()
		}
	}
}

// hangListener accepts connections and never answers; they are closed when
// the test ends.
func hangListener(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

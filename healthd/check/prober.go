package check

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of [Config].
const (
	DefaultConcurrency = 1024
	DefaultHistory     = 10
	DefaultJitter      = 0.1
	DefaultResolution  = 5 * time.Millisecond
	// NoJitter as Config.Jitter starts every check exactly at its slot.
	NoJitter = -1.0
	// MaxJitter is the largest Config.Jitter; larger values are clamped.
	MaxJitter = 0.5
)

// Errors a caller can act on.
var (
	// ErrRunning is returned by Run while another Run is active.
	ErrRunning = errors.New("prober already running")
	// ErrInvalidID is returned by Set for an empty ID.
	ErrInvalidID = errors.New("invalid target id")
)

// Config configures a [Prober]. Zero fields take their defaults.
type Config struct {
	// Concurrency bounds the checks in flight at once. Default 1024. A
	// check that hangs holds its place for its whole timeout, so to keep
	// every backend on schedule when all of them hang, allow
	// (targets / interval) × timeout, e.g. 5000 for 10,000 targets at 2s
	// with a 1s timeout.
	Concurrency int
	// History is how many recent results each target keeps. Default 10.
	History int
	// Jitter is the largest random shift of a check's start, as a fraction
	// of its interval, either way. Default 0.1; NoJitter disables it;
	// values above MaxJitter are clamped.
	Jitter float64
	// Resolution groups check starts: the checks due within one tick of
	// this length start together at its end, so the Prober wakes once per
	// tick, not once per check. Default 5ms; negative starts every check
	// at its own time.
	Resolution time.Duration
	// Clock schedules checks and stamps results. Default SystemClock.
	Clock Clock
	// Logger receives one line per state change. Default: discard.
	Logger *slog.Logger
	// OnEvent, if set, receives every event, from the goroutine that ran
	// the check. The events of one target arrive one at a time, in order;
	// those of different targets may arrive concurrently. It should return
	// quickly: the check holds its concurrency slot meanwhile, and a TCP
	// check whose connect finishes within its socket calls (a backend on
	// this host) runs on the goroutine that starts the checks, so later
	// checks wait for it. It may call the Prober's methods.
	OnEvent func(Event)
	// OnResult, if set, receives every check result, like OnEvent, after
	// the event the result caused, if any.
	OnResult func(id string, r Result)
}

// Result is the outcome of one check.
type Result struct {
	Time    time.Time     `json:"time"`          // start, by the Prober's clock
	Latency time.Duration `json:"latency"`       // real time the check took
	Err     string        `json:"err,omitempty"` // "" when the check passed
}

// Status is a snapshot of one target.
type Status struct {
	ID      string    `json:"id"`
	Spec    Spec      `json:"spec"` // with defaults applied
	State   State     `json:"state"`
	Damped  bool      `json:"damped"` // held down for flapping; State is Unhealthy
	Since   time.Time `json:"since"`  // when State last changed
	LastErr string    `json:"last_err,omitempty"`
	Passes  int       `json:"passes"` // consecutive passes
	Fails   int       `json:"fails"`  // consecutive failures
	Checks  uint64    `json:"checks"` // results so far
	Next    time.Time `json:"next"`   // when the next check is due
	History []Result  `json:"history"`
}

// Stats counts the work of a [Prober].
type Stats struct {
	Targets  int    `json:"targets"`
	InFlight int    `json:"in_flight"`
	Checks   uint64 `json:"checks"`  // checks completed
	Skipped  uint64 `json:"skipped"` // slots skipped: still running, or the checker fell behind
}

// Prober runs the health checks of a set of targets, each identified by an
// ID chosen by the caller. Create it with [NewProber], add targets with Set
// (before or during Run) and run it with Run. All methods are safe for
// concurrent use.
type Prober struct {
	cfg    Config
	clock  Clock
	log    *slog.Logger
	jitter float64
	wake   chan struct{}

	mu      sync.Mutex
	targets map[string]*target
	queue   schedule
	running bool
	stats   Stats
}

type target struct {
	id       string
	spec     Spec
	probe    probe
	conn     *connector // TCP check of an IP address, else nil
	waits    bool       // its last connect did not finish within the socket calls
	machine  *Machine
	history  []Result // ring, oldest at head once full
	head     int
	checks   uint64
	lastErr  string
	nominal  time.Time // current slot
	due      time.Time // slot plus jitter
	index    int       // in the schedule heap
	inflight bool      // collected and not yet recorded
	deliver  sync.Mutex
}

// NewProber returns a Prober with cfg; out-of-range values in cfg are
// replaced by their defaults.
func NewProber(cfg Config) *Prober {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case cfg.Resolution == 0:
		cfg.Resolution = DefaultResolution
	case cfg.Resolution < 0:
		cfg.Resolution = 0
	}
	jitter := cfg.Jitter
	switch {
	case jitter == 0:
		jitter = DefaultJitter
	case jitter < 0:
		jitter = 0
	case jitter > MaxJitter:
		jitter = MaxJitter
	}
	return &Prober{
		cfg:     cfg,
		clock:   cfg.Clock,
		log:     cfg.Logger,
		jitter:  jitter,
		wake:    make(chan struct{}, 1),
		targets: make(map[string]*target),
	}
}

// Set adds the target id with spec, or changes it. A changed target keeps
// its state, counts and history; the new spec applies from its next check,
// and its slot moves only if the interval changed. Others are not touched.
// An invalid spec changes nothing and returns an error naming the field.
func (p *Prober) Set(id string, spec Spec) error {
	if id == "" {
		return fmt.Errorf("set health check: %w: must not be empty", ErrInvalidID)
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("set health check of %s: %w", id, err)
	}
	spec = spec.WithDefaults()
	spec.Payload, spec.Expect = bytes.Clone(spec.Payload), bytes.Clone(spec.Expect)
	pr, conn := newProbe(spec), (*connector)(nil)
	if spec.Kind == TCP {
		if conn = newConnector(spec.Target); conn != nil {
			pr = conn.probe
		}
	}
	now := p.clock.Now()

	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[id]
	if !ok {
		t = &target{id: id, spec: spec, probe: pr, conn: conn, machine: NewMachine(spec, now),
			history: make([]Result, 0, p.cfg.History)}
		p.targets[id] = t
		p.place(t, now)
		heap.Push(&p.queue, t)
	} else {
		old := t.spec
		t.spec, t.probe, t.conn = spec, pr, conn
		t.machine.SetSpec(spec)
		if old.Interval != spec.Interval {
			p.place(t, now)
			heap.Fix(&p.queue, t.index)
		}
	}
	p.poke()
	return nil
}

// Remove stops checking id and forgets it; a check in flight is discarded.
// Removing an unknown id does nothing. No event is sent.
func (p *Prober) Remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[id]
	if !ok {
		return
	}
	delete(p.targets, id)
	heap.Remove(&p.queue, t.index)
	p.poke()
}

// Status returns a snapshot of id.
func (p *Prober) Status(id string) (Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[id]
	if !ok {
		return Status{}, false
	}
	return t.status(), true
}

// Statuses returns a snapshot of every target, sorted by ID.
func (p *Prober) Statuses() []Status {
	p.mu.Lock()
	out := make([]Status, 0, len(p.targets))
	for _, t := range p.targets {
		out = append(out, t.status())
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Stats returns the counters of the Prober.
func (p *Prober) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Targets = len(p.targets)
	return s
}

func (t *target) status() Status {
	passes, fails := t.machine.Counts()
	h := make([]Result, 0, len(t.history))
	h = append(h, t.history[t.head:]...)
	h = append(h, t.history[:t.head]...)
	return Status{
		ID: t.id, Spec: t.spec, State: t.machine.State(), Damped: t.machine.Damped(),
		Since: t.machine.Since(), LastErr: t.lastErr, Passes: passes, Fails: fails,
		Checks: t.checks, Next: t.due, History: h,
	}
}

func (t *target) record(r Result, max int) {
	t.checks++
	if r.Err != "" {
		t.lastErr = r.Err
	}
	if len(t.history) < max {
		t.history = append(t.history, r)
		return
	}
	t.history[t.head] = r
	t.head = (t.head + 1) % max
}

// Run checks the targets until ctx is done, then waits for the checks in
// flight (which are cancelled) and returns nil. A target whose first slot
// passed before Run started moves to its next slot. Only one Run may be
// active.
func (p *Prober) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return ErrRunning
	}
	p.running = true
	now := p.clock.Now()
	for _, t := range p.targets {
		if t.due.Before(now) { // set long before Run: no burst at the start
			p.place(t, now)
		}
	}
	heap.Init(&p.queue)
	p.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()
	sem := make(chan struct{}, p.cfg.Concurrency)
	timer := p.clock.NewTimer()
	defer timer.Stop()
	idle := newIdleSockets()
	defer idle.close()
	var jobs []job
	for {
		var next time.Time
		jobs, next = p.collect(jobs[:0])
		for i, j := range jobs {
			// A TCP check of an IP address starts here: its socket calls
			// never wait, and on a connect that finishes within them (a
			// backend on this host) the check is done, with no goroutine,
			// context or timer. A connect still in progress moves to a
			// goroutine of its own, to wait in the poller, and the next
			// checks of that target start in their goroutines, as other
			// checks do: with many of them, this goroutine would make the
			// socket calls of all of them, and queue for a core behind
			// their goroutines after each.
			fd, start, began := -1, time.Time{}, time.Time{}
			if j.inline {
				start, began = p.clock.Now(), time.Now()
				var done bool
				var err error
				if fd, done, err = j.conn.start(idle); done {
					p.finish(ctx, j, Result{Time: start, Latency: time.Since(began),
						Err: describe(ctx, err, j.timeout)}, false, false)
					continue
				}
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				if fd >= 0 {
					syscall.Close(fd)
				}
				p.abandon(jobs[i:])
				return nil
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				p.mu.Lock()
				p.stats.InFlight++
				p.mu.Unlock()
				if j.conn != nil {
					p.await(ctx, j, fd, start, began)
				} else {
					p.check(ctx, j)
				}
			}()
		}
		if len(jobs) > 0 {
			continue // time has moved on while dispatching
		}
		if next.IsZero() {
			next = p.clock.Now().Add(time.Hour)
		}
		timer.ResetAt(tickEnd(next, p.cfg.Resolution))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C():
		case <-p.wake:
		}
	}
}

// job is one check to run: its target, and the target's probe and the parts
// of its spec the check needs, as they were when it was collected.
type job struct {
	t       *target
	probe   probe
	conn    *connector
	inline  bool   // start on the scheduling goroutine, with a kept socket
	target  string // Spec.Target
	timeout time.Duration
}

// collect takes every target that is due, marks it in flight and moves it to
// its next slot. It returns them and when the next target is due.
func (p *Prober) collect(jobs []job) ([]job, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	for len(p.queue) > 0 && !p.queue[0].due.After(now) {
		t := p.queue[0]
		if t.inflight {
			p.stats.Skipped++
		} else {
			t.inflight = true
			jobs = append(jobs, job{t: t, probe: t.probe, conn: t.conn, inline: t.conn != nil && !t.waits,
				target: t.spec.Target, timeout: t.spec.Timeout})
		}
		t.nominal = t.nominal.Add(t.spec.Interval)
		if !t.nominal.After(now) { // fell behind: skip to the next slot
			p.stats.Skipped++
			t.nominal = nextSlot(now, phase(t.id, t.spec.Interval), t.spec.Interval)
		}
		t.due = t.nominal.Add(p.jitterFor(t.spec.Interval))
		heap.Fix(&p.queue, 0)
	}
	if len(p.queue) == 0 {
		return jobs, time.Time{}
	}
	return jobs, p.queue[0].due
}

// abandon clears the in-flight mark of jobs that were collected but never
// started.
func (p *Prober) abandon(jobs []job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range jobs {
		j.t.inflight = false
	}
}

// check runs one check of j and records it.
func (p *Prober) check(ctx context.Context, j job) {
	start := p.clock.Now()
	cctx, cancel := context.WithTimeout(ctx, j.timeout)
	began := time.Now()
	err := j.probe(cctx)
	latency := time.Since(began)
	r := Result{Time: start, Latency: latency, Err: describe(cctx, err, j.timeout)}
	cancel()
	p.finish(ctx, j, r, true, false)
}

// await runs the TCP check j with its connector: it waits for the connect
// started at began on fd, or, when fd < 0, starts one on a socket of its
// own and waits if need be, until the check's timeout; it records the check.
func (p *Prober) await(ctx context.Context, j job, fd int, start, began time.Time) {
	if fd < 0 {
		start, began = p.clock.Now(), time.Now()
		var done bool
		var err error
		if fd, done, err = j.conn.start(nil); done {
			p.finish(ctx, j, Result{Time: start, Latency: time.Since(began),
				Err: describe(ctx, err, j.timeout)}, true, false)
			return
		}
	}
	waited, err := j.conn.wait(ctx, fd, began.Add(j.timeout))
	latency := time.Since(began)
	p.finish(ctx, j, Result{Time: start, Latency: latency, Err: describe(ctx, err, j.timeout)}, true, waited)
}

// finish records the result r of a check of j, unless the target was
// removed or changed meanwhile or ctx ended, and calls the callbacks.
// counted says whether the check was counted in flight (it ran in a
// goroutine with a concurrency slot), waited whether its connect waited in
// the poller (TCP checks with a connector).
func (p *Prober) finish(ctx context.Context, j job, r Result, counted, waited bool) {
	t := j.t
	// deliver keeps the callbacks of one target in order, also when its
	// next check finishes while these callbacks still run.
	t.deliver.Lock()
	defer t.deliver.Unlock()
	var ev Event
	changed := false
	p.mu.Lock()
	current := ctx.Err() == nil && p.targets[t.id] == t
	if current {
		t.record(r, p.cfg.History)
		p.stats.Checks++
		ev, changed = t.machine.Observe(r.Time, r.Err)
		ev.ID = t.id
	}
	t.inflight = false
	if j.conn != nil {
		t.waits = waited
	}
	if counted {
		p.stats.InFlight--
	}
	p.mu.Unlock()

	if !current {
		return
	}
	if changed {
		p.log.Info("health state changed", "backend", t.id, "target", j.target,
			"from", ev.From.String(), "to", ev.To.String(), "damped", ev.Damped,
			"reason", ev.Reason, "err", ev.Err)
		if p.cfg.OnEvent != nil {
			p.cfg.OnEvent(ev)
		}
	}
	if p.cfg.OnResult != nil {
		p.cfg.OnResult(t.id, r)
	}
}

// place puts t on the first slot of its phase after now.
func (p *Prober) place(t *target, now time.Time) {
	t.nominal = nextSlot(now, phase(t.id, t.spec.Interval), t.spec.Interval)
	t.due = t.nominal.Add(p.jitterFor(t.spec.Interval))
}

func (p *Prober) jitterFor(interval time.Duration) time.Duration {
	if p.jitter == 0 {
		return 0
	}
	return time.Duration((rand.Float64()*2 - 1) * p.jitter * float64(interval))
}

// poke wakes the scheduler; the caller holds p.mu.
func (p *Prober) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// phase returns the stable offset of id within interval: a hash of the ID,
// so that targets spread evenly and never move when others come and go.
func phase(id string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(interval))
}

// nextSlot returns the first time after now that lies phase past a whole
// multiple of interval (counted from the Unix epoch).
func nextSlot(now time.Time, phase, interval time.Duration) time.Time {
	n := now.UnixNano()
	iv := int64(interval)
	slot := (n-int64(phase))/iv*iv + int64(phase)
	for slot <= n {
		slot += iv
	}
	return now.Add(time.Duration(slot - n))
}

// tickEnd rounds t up to a multiple of res (counted from the Unix epoch).
func tickEnd(t time.Time, res time.Duration) time.Time {
	if res <= 0 {
		return t
	}
	over := time.Duration(t.UnixNano() % int64(res))
	if over == 0 {
		return t
	}
	return t.Add(res - over)
}

// schedule is a min-heap of targets by due time.
type schedule []*target

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	t := x.(*target)
	t.index = len(*s)
	*s = append(*s, t)
}
func (s *schedule) Pop() any {
	old := *s
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	t.index = -1
	return t
}

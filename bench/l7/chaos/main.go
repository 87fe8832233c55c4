// Command chaos runs the xlb L7 proxy in front of three loopback backends —
// one healthy, one that fails half of its requests with 503, one that
// accepts connections and never answers — under open-loop load from
// bench/l7/loadgen, once with every resilience mechanism on and once with
// each of them off in turn, and prints one table row per run: the error rate
// and latency the clients saw, and how hard the healthy backend was pushed.
//
// Only 127.0.0.1 is used, on ports the kernel picks; every backend, proxy
// and loadgen process is stopped before the next run.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/proxy"
	"github.com/xlb-project/xlb/proxy/config"
)

// verbose logs the proxy's events to stderr.
var verbose bool

// scenario is one run: a name and the pool and route blocks that differ.
type scenario struct {
	name, pool, route string
}

const (
	breakerBlock = `breaker: {consecutive_failures: 5, failure_ratio: 0.3, min_requests: 20, window: 5s, open_base: 2s, open_max: 20s, probes: 2}`
	retryOn      = `attempts: 3, on: [connect_failure, reset, per_try_timeout], statuses: [502, 503, 504]`
	budgetBlock  = `budget: {ratio: 0.2, floor: 10}`
)

var scenarios = []scenario{
	{"all on", breakerBlock, `retry: {` + retryOn + `, per_try_timeout: 500ms, ` + budgetBlock + `}`},
	{"breakers off", ``, `retry: {` + retryOn + `, per_try_timeout: 500ms, ` + budgetBlock + `}`},
	{"retries off", breakerBlock, ``},
	{"retry budget off", breakerBlock, `retry: {` + retryOn + `, per_try_timeout: 500ms, budget: {ratio: 1, floor: 1000000}}`},
	{"per-try timeout off", breakerBlock, `retry: {` + retryOn + `, ` + budgetBlock + `}`},
	{"breakers+budget off", ``, `retry: {` + retryOn + `, per_try_timeout: 500ms, budget: {ratio: 1, floor: 1000000}}`},
	{"all off", ``, ``},
}

func main() {
	loadgen := flag.String("loadgen", "", "path of the bench/l7/loadgen binary (required)")
	rate := flag.Float64("rate", 500, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "load per run")
	conns := flag.Int("conns", 256, "loadgen connections")
	timeout := flag.Duration("timeout", 2*time.Second, "the route's timeout")
	only := flag.String("only", "", "run only the scenarios whose name contains this")
	flag.BoolVar(&verbose, "v", false, "log the proxy's events (breakers opening, ...) to stderr")
	overload := flag.Float64("overload", 2, "also run the load-shedding table at this multiple of a backend's capacity; 0: not")
	flag.Parse()
	if *loadgen == "" {
		fmt.Fprintln(os.Stderr, "chaos: -loadgen is required")
		os.Exit(2)
	}
	fmt.Printf("rate %.0f/s for %v over %d connections; route timeout %v; round_robin over healthy, failing-50%%, hanging\n", *rate, *duration, *conns, *timeout)
	fmt.Printf("%-20s %8s %8s %9s %9s %9s %12s %12s %10s\n", "scenario", "sent", "errors", "error %", "p50 ms", "p99 ms", "healthy x", "healthy peak", "attempts x")
	for _, sc := range scenarios {
		if *only != "" && !strings.Contains(sc.name, *only) {
			continue
		}
		r, err := run(sc, *loadgen, *rate, *duration, *conns, *timeout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chaos: %s: %v\n", sc.name, err)
			os.Exit(1)
		}
		fmt.Printf("%-20s %8d %8d %9.2f %9.1f %9.1f %12.2f %12d %10.2f\n", sc.name, r.sent, r.errors, 100*float64(r.errors)/float64(r.sent),
			float64(r.p50)/1000, float64(r.p99)/1000, float64(r.healthy)/float64(r.sent), r.healthyPeak, float64(r.attempts)/float64(r.sent))
	}
	fmt.Println("healthy x: requests the healthy backend got per client request (1/3 without failures); attempts x: requests all backends got per client request")
	if *overload > 0 {
		if err := overloadTable(*loadgen, *overload, *duration, *conns); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: overload: %v\n", err)
			os.Exit(1)
		}
	}
}

// overloadTable offers one backend of known capacity (workers × 1/service)
// `factor` times that load, without and with the adaptive concurrency
// limit, and prints what the clients saw.
func overloadTable(loadgen string, factor float64, d time.Duration, conns int) error {
	const workers, service = 8, 10 * time.Millisecond
	capacity := float64(workers) / service.Seconds()
	rate := factor * capacity
	fmt.Printf("\noverload: one backend of %d workers × %v (capacity %.0f/s) offered %.0f/s (%.1f×) for %v over %d connections\n",
		workers, service, capacity, rate, factor, d, conns)
	fmt.Printf("%-20s %8s %8s %9s %9s %9s %10s\n", "scenario", "sent", "errors", "error %", "p50 ms", "p99 ms", "goodput/s")
	defer fmt.Println("goodput: successful requests per second over the run, until the last answer")
	for _, sc := range []scenario{
		{"shedding off", ``, ``},
		{"shedding on", `adaptive_concurrency: {min_limit: 4, max_limit: 1000}`, ``},
	} {
		be := &queueBackend{slots: make(chan struct{}, workers), service: service}
		r, err := runWith(sc, loadgen, rate, d, conns, 10*time.Second, []http.Handler{be})
		if err != nil {
			return err
		}
		fmt.Printf("%-20s %8d %8d %9.2f %9.1f %9.1f %10.0f\n", sc.name, r.sent, r.errors, 100*float64(r.errors)/float64(r.sent),
			float64(r.p50)/1000, float64(r.p99)/1000, r.goodput)
	}
	return nil
}

// queueBackend serves at most cap(slots) requests at once, each taking
// service; the others wait for a slot.
type queueBackend struct {
	slots   chan struct{}
	service time.Duration
}

func (b *queueBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.slots <- struct{}{}
	time.Sleep(b.service) // the work
	<-b.slots
	w.Header().Set("Content-Length", "2")
	_, _ = io.WriteString(w, "ok")
}

type result struct {
	sent, errors  int
	p50, p99      int64 // µs
	healthy       int64
	healthyPeak   int64
	attempts      int64
	loadgenOutput string
	goodput       float64 // successful requests per second of the run
}

func run(sc scenario, loadgen string, rate float64, d time.Duration, conns int, timeout time.Duration) (result, error) {
	return runWith(sc, loadgen, rate, d, conns, timeout, nil)
}

// runWith runs one scenario: with handlers nil over the three chaos
// backends, else over servers of the given handlers.
func runWith(sc scenario, loadgen string, rate float64, d time.Duration, conns int, timeout time.Duration, handlers []http.Handler) (result, error) {
	var res result
	if handlers != nil {
		var addrs []string
		for _, h := range handlers {
			s, err := serve(h)
			if err != nil {
				return res, err
			}
			defer s.Close()
			addrs = append(addrs, fmt.Sprintf("{address: %q}", s.Addr()))
		}
		return measure(res, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [%s]
    %s
routes:
  - name: all
    pool: app
    timeout: %s
    %s
`, strings.Join(addrs, ", "), sc.pool, timeout, sc.route), loadgen, rate, d, conns)
	}
	healthy := &countingBackend{}
	flaky := &countingBackend{failEvery: 2}
	hs, err := serve(healthy)
	if err != nil {
		return res, err
	}
	defer hs.Close()
	fs, err := serve(flaky)
	if err != nil {
		return res, err
	}
	defer fs.Close()
	hang, err := hangingBackend()
	if err != nil {
		return res, err
	}
	defer hang.Close()

	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    algorithm: round_robin
    backends: [{address: %q}, {address: %q}, {address: %q}]
    %s
routes:
  - name: all
    pool: app
    timeout: %s
    %s
`, hs.Addr(), fs.Addr(), hang.l.Addr(), sc.pool, timeout, sc.route)
	res, err = measure(res, cfg, loadgen, rate, d, conns)
	if err != nil {
		return res, err
	}
	res.healthy = healthy.hits.Load()
	res.healthyPeak = healthy.peak.Load()
	res.attempts = healthy.hits.Load() + flaky.hits.Load() + hang.hits.Load()
	return res, nil
}

// measure runs a proxy with cfg and loadgen against it.
func measure(res result, cfg, loadgen string, rate float64, d time.Duration, conns int) (result, error) {
	c, err := config.Parse([]byte(cfg))
	if err != nil {
		return res, fmt.Errorf("config: %w\n%s", err, cfg)
	}
	logger := slog.New(slog.DiscardHandler)
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	p, err := proxy.New(c, proxy.Options{Logger: logger})
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var addr net.Addr
	for deadline := time.Now().Add(5 * time.Second); addr == nil; {
		if addr = p.Addrs()["web"]; addr == nil {
			if time.Now().After(deadline) {
				return res, fmt.Errorf("proxy did not listen")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	out, err := exec.Command(loadgen, "-addr", addr.String(), "-rate", fmt.Sprint(rate),
		"-duration", d.String(), "-conns", fmt.Sprint(conns)).Output()
	if err != nil {
		return res, fmt.Errorf("loadgen: %w", err)
	}
	res.loadgenOutput = strings.TrimSpace(string(out))
	var ok int
	var p90, p999, maxUS int64
	if _, err := fmt.Sscanf(res.loadgenOutput, "rate=%f sent=%d ok=%d errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d",
		&res.goodput, &res.sent, &ok, &res.errors, &res.p50, &p90, &res.p99, &p999, &maxUS); err != nil {
		return res, fmt.Errorf("loadgen output %q: %w", res.loadgenOutput, err)
	}
	return res, nil
}

// countingBackend answers 200 "ok", or 503 to a random 1/failEvery of the
// requests, and counts requests and the peak of requests in flight.
type countingBackend struct {
	failEvery int
	hits      atomic.Int64
	inflight  atomic.Int64
	peak      atomic.Int64
}

func (b *countingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	in := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		p := b.peak.Load()
		if in <= p || b.peak.CompareAndSwap(p, in) {
			break
		}
	}
	_, _ = io.Copy(io.Discard, r.Body)
	if b.failEvery > 0 && rand.IntN(b.failEvery) == 0 {
		http.Error(w, "failing", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Length", "2")
	_, _ = io.WriteString(w, "ok")
}

type server struct {
	l   net.Listener
	srv *http.Server
}

func (s *server) Addr() string { return s.l.Addr().String() }
func (s *server) Close()       { _ = s.srv.Close() }

func serve(h http.Handler) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{l: l, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// hanging accepts connections, reads requests and never answers.
type hanging struct {
	l     net.Listener
	hits  atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func hangingBackend() (*hanging, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hanging{l: l}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "GET ") || strings.HasPrefix(line, "POST ") {
						h.hits.Add(1)
					}
				}
			}()
		}
	}()
	return h, nil
}

func (h *hanging) Close() {
	_ = h.l.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

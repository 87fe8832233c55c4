package check_test

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
)

// listenerEnv makes the test binary serve as the benchmark's backends: a
// separate process, so that the checker's CPU time excludes theirs.
const listenerEnv = "XLB_CHECK_BENCH_LISTENERS"

func TestMain(m *testing.M) {
	if n := os.Getenv(listenerEnv); n != "" {
		serveListeners(n)
		return
	}
	os.Exit(m.Run())
}

// serveListeners opens n loopback listeners that accept and close every
// connection, prints their addresses, one a line, then "ready", and serves
// until its standard input closes.
func serveListeners(n string) {
	count, err := strconv.Atoi(n)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: want a number\n", listenerEnv, n)
		os.Exit(2)
	}
	for range count {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintf(os.Stderr, "listen: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(ln.Addr())
		go closeAccepted(ln, nil)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// startListeners runs n backend listeners in a child process.
func startListeners(b *testing.B, n int) []string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("find test binary: %v", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", listenerEnv, n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start listeners: %v", err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		addrs = append(addrs, sc.Text())
	}
	if len(addrs) != n {
		b.Fatalf("listener process gave %d addresses, want %d", len(addrs), n)
	}
	return addrs
}

// cpuTime returns the user and system CPU time of this process.
func cpuTime(b *testing.B) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func totalCPU(b *testing.B) time.Duration {
	u, s := cpuTime(b)
	return u + s
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func raiseFileLimit(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("getrlimit: %v", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("setrlimit: %v", err)
	}
}

func benchSeconds() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("XLB_HEALTH_BENCH_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 10 * time.Second
}

// BenchmarkProber10kTCP checks 10,000 backends over TCP at a 1s interval
// against loopback listeners in another process. It reports the checker's
// CPU as a share of one core (budget: under 0.25), its CPU per check next to
// bare connect loops at the same rate measured in the same run, and how
// evenly the check starts spread over time. On loopback a connect finishes
// within the socket call; a second run makes every check wait in the
// network poller, as connects to backends on other hosts do. Run with -benchtime=1x;
// XLB_HEALTH_BENCH_SECONDS sets the measured time (default 10),
// XLB_HEALTH_BENCH_TARGETS the number of targets (default 10000).
func BenchmarkProber10kTCP(b *testing.B) {
	const (
		listeners = 50
		interval  = time.Second
	)
	targets := 10000
	if n, err := strconv.Atoi(os.Getenv("XLB_HEALTH_BENCH_TARGETS")); err == nil && n > 0 {
		targets = n
	}
	raiseFileLimit(b)
	addrs := startListeners(b, listeners)
	measure := benchSeconds()

	for range b.N {
		// References in the same run, the same number of connects a
		// second from a bare loop with no scheduling, state or history:
		// through net.Dialer, and through blocking socket calls (about the
		// least a connect check can cost).
		refTime := measure
		if os.Getenv("XLB_HEALTH_BENCH_REFS") == "0" { // for profiling the checker alone
			refTime = 100 * time.Millisecond
		}
		dialCPU, dialUser, dials := referenceLoop(b, refTime, targets, func(i int) bool {
			c, err := net.DialTimeout("tcp", addrs[i%len(addrs)], time.Second)
			if err != nil {
				return false
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			return c.Close() == nil
		})
		sockaddrs := make([]syscall.SockaddrInet4, len(addrs))
		for i, a := range addrs {
			ap := netip.MustParseAddrPort(a)
			sockaddrs[i] = syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		}
		rawCPU, rawUser, raws := referenceLoop(b, refTime, targets, func(i int) bool {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				return false
			}
			defer syscall.Close(fd)
			_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
			sa := sockaddrs[i%len(sockaddrs)]
			return syscall.Connect(fd, &sa) == nil
		})

		fast := runProber(b, addrs, targets, interval, measure, false)
		poller := runProber(b, addrs, targets, interval, measure, true)

		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
		dialPer := dialCPU / time.Duration(max(dials, 1))
		rawPer := rawCPU / time.Duration(max(raws, 1))
		b.ReportMetric(fast.share(), "core-share")
		b.ReportMetric(fast.user.Seconds()/fast.wall.Seconds(), "user-core-share")
		b.ReportMetric(poller.share(), "poller-core-share")
		b.ReportMetric(fast.checksPerSec(), "checks/s")
		b.ReportMetric(us(fast.perCheck()), "cpu-µs/check")
		b.ReportMetric(float64(fast.perCheck())/float64(dialPer), "x-dialer-loop")
		b.ReportMetric(float64(fast.perCheck())/float64(rawPer), "x-socket-loop")
		b.ReportMetric(float64(poller.perCheck())/float64(dialPer), "poller-x-dialer-loop")
		b.ReportMetric(fast.peak, "peak/mean-10ms")
		b.ReportMetric(fast.cov, "cov-10ms")
		b.ReportMetric(fast.planCoV, "planned-cov-10ms")
		b.ReportMetric(float64(fast.failed+poller.failed), "failed")
		b.ReportMetric(float64(fast.skipped+poller.skipped), "skipped")
		b.Logf("%d targets at %s over %d loopback listeners, %s measured per run, load average %s",
			targets, interval, listeners, measure, loadAverage())
		b.Logf("bare loops at the same rate: net.Dialer %.1f µs CPU per connect (user %.1f), blocking socket calls %.1f µs (user %.1f)",
			us(dialPer), us(dialUser/time.Duration(max(dials, 1))), us(rawPer), us(rawUser/time.Duration(max(raws, 1))))
		for _, r := range []struct {
			name string
			run  proberRun
		}{{"connect done in the socket call (loopback)", fast}, {"connect waited for in the poller (remote backends)", poller}} {
			b.Logf("%s: checker CPU %.1f%% of one core (budget 25%%): user %.1f%%, system %.1f%%; %.0f checks/s; "+
				"%.1f µs per check (user %.1f) = %.2fx net.Dialer loop, %.2fx socket loop",
				r.name, 100*r.run.share(), 100*r.run.user.Seconds()/r.run.wall.Seconds(), 100*r.run.sys.Seconds()/r.run.wall.Seconds(),
				r.run.checksPerSec(), us(r.run.perCheck()), us(r.run.user/time.Duration(max(r.run.checks, 1))),
				float64(r.run.perCheck())/float64(dialPer), float64(r.run.perCheck())/float64(rawPer))
			b.Logf("  check starts per 10 ms: peak %.2fx the mean, coefficient of variation %.2f (as scheduled: %.2fx, %.2f); %d failed, %d slots skipped",
				r.run.peak, r.run.cov, r.run.planPeak, r.run.planCoV, r.run.failed, r.run.skipped)
			if r.run.lastErr != "" {
				b.Logf("  last check error: %s", r.run.lastErr)
			}
		}
	}
}

// proberRun is what one measured run of the Prober gave.
type proberRun struct {
	user, sys, wall time.Duration
	checks          uint64
	failed, skipped uint64
	peak, cov       float64 // of the check starts
	planPeak        float64 // of the first slots as scheduled
	planCoV         float64
	lastErr         string
}

func (r proberRun) share() float64        { return (r.user + r.sys).Seconds() / r.wall.Seconds() }
func (r proberRun) checksPerSec() float64 { return float64(r.checks) / r.wall.Seconds() }
func (r proberRun) perCheck() time.Duration {
	return (r.user + r.sys) / time.Duration(max(r.checks, 1))
}

// runProber checks targets TCP backends spread over addrs and measures the
// process for d after a warm-up of two intervals.
func runProber(b *testing.B, addrs []string, targets int, interval, d time.Duration, poller bool) proberRun {
	check.SetForcePoller(poller)
	defer check.SetForcePoller(false)
	var mu sync.Mutex
	var starts []time.Time
	var failures atomic.Uint64
	var lastErr atomic.Value
	p := check.NewProber(check.Config{OnResult: func(_ string, r check.Result) {
		if r.Err != "" {
			failures.Add(1)
			lastErr.Store(r.Err)
		}
		mu.Lock()
		starts = append(starts, r.Time)
		mu.Unlock()
	}})
	for i := range targets {
		spec := check.Spec{Kind: check.TCP, Target: addrs[i%len(addrs)], Interval: interval}
		if err := p.Set(fmt.Sprintf("backend-%d", i), spec); err != nil {
			b.Fatal(err)
		}
	}
	// The plan: when within the interval each target's first check is due.
	var planned []time.Time
	epoch := time.Unix(0, 0)
	for _, st := range p.Statuses() {
		planned = append(planned, epoch.Add(time.Duration(st.Next.UnixNano()%int64(interval))))
	}
	planPeak, planCoV := startSpread(planned, epoch, epoch.Add(interval), 10*time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	time.Sleep(2 * interval) // warm up: every target has had its first check
	before, failed0 := p.Stats(), failures.Load()
	user0, sys0 := cpuTime(b)
	wall0 := time.Now()
	time.Sleep(d)
	user1, sys1 := cpuTime(b)
	wall := time.Since(wall0)
	after, failed1 := p.Stats(), failures.Load()
	cancel()
	<-done

	r := proberRun{user: user1 - user0, sys: sys1 - sys0, wall: wall, checks: after.Checks - before.Checks,
		failed: failed1 - failed0, skipped: after.Skipped - before.Skipped, planPeak: planPeak, planCoV: planCoV}
	mu.Lock()
	r.peak, r.cov = startSpread(starts, wall0, wall0.Add(wall), 10*time.Millisecond)
	mu.Unlock()
	if e, ok := lastErr.Load().(string); ok {
		r.lastErr = e
	}
	return r
}

// referenceLoop calls connect(i) rate times a second, spread over workers
// paced by millisecond tickers, for d; it returns the CPU used, the user
// part of it, and the successful calls.
func referenceLoop(b *testing.B, d time.Duration, rate int, connect func(i int) bool) (cpu, user time.Duration, calls int64) {
	const workers = 20
	perTick := max(rate/workers/1000, 1)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	user0, _ := cpuTime(b)
	cpu0 := totalCPU(b)
	for w := range workers {
		wg.Go(func() {
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			i := w
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for range perTick {
					if connect(i) {
						n.Add(1)
					}
					i += workers
				}
			}
		})
	}
	wg.Wait()
	user1, _ := cpuTime(b)
	return totalCPU(b) - cpu0, user1 - user0, n.Load()
}

// startSpread buckets the start times within [from, to) and returns the
// fullest bucket over the mean, and the coefficient of variation.
func startSpread(starts []time.Time, from, to time.Time, bucket time.Duration) (peak, cov float64) {
	counts := make([]float64, int(to.Sub(from)/bucket))
	if len(counts) == 0 {
		return 0, 0
	}
	for _, s := range starts {
		if i := int(s.Sub(from) / bucket); !s.Before(from) && i < len(counts) {
			counts[i]++
		}
	}
	var sum float64
	for _, c := range counts {
		sum += c
	}
	mean := sum / float64(len(counts))
	if mean == 0 {
		return 0, 0
	}
	var sq float64
	for _, c := range counts {
		sq += (c - mean) * (c - mean)
	}
	return slices.Max(counts) / mean, math.Sqrt(sq/float64(len(counts))) / mean
}

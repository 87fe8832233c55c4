package ratelimit

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pauseRig runs what a proxy's limit sees while one million distinct keys
// arrive and expire: requests of existing keys (probers) through the
// limiter's real decision path, the sweeps, and a ticker, each recording the
// longest it waited.
type pauseRig struct {
	set   *Set
	lim   *Limiter
	stop  chan struct{}
	wg    sync.WaitGroup
	probe atomic.Int64 // ns, longest decision of a prober
	late  atomic.Int64 // ns, longest a 1 ms tick came late
	peak  atomic.Int64 // most keys held, sampled by the inserter
	// calls and slow count prober decisions, and those over 10 ms.
	calls, slow atomic.Int64
	// probeOwn is the longest decision during which the kernel did not
	// preempt the prober's thread (an involuntary context switch); it
	// still includes waiting for a lock or the GC.
	probeOwn atomic.Int64
	// step is the longest a sweep step held its shard's lock when the
	// kernel did not preempt the sweeping thread (since the step before):
	// the step's own cost under the run's contention (the GC included);
	// preempted counts the steps it did preempt.
	step, preempted atomic.Int64
}

// preemptions is how often the kernel has preempted the calling thread
// (lock it to its goroutine first).
func preemptions() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return ru.Nivcsw
}

// probeKeys are the existing keys the probers ask for (198.51.x.y/32,
// spread over every shard).
const probeKeys = 1024

func newPauseRig(b *testing.B, life time.Duration) *pauseRig {
	c, err := parseYAML(b, fmt.Sprintf("rate: 1\nper: %s\nburst: 1\nheaders: none\nmax_keys: 1000000\n", life))
	if err != nil {
		b.Fatal(err)
	}
	g := &pauseRig{set: NewSet(nil, nil), stop: make(chan struct{})}
	g.lim = g.set.Limiter(c, Options{Route: "r"})
	for i := range probeKeys {
		g.lim.admit(&nopWriter{h: http.Header{}}, request(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})))
	}
	// Two probers, paced (one decision every ~200 µs each) so that they
	// do not compete for the CPU themselves: what they wait for is locks,
	// the GC and the machine.
	for p := range 2 {
		g.wg.Go(func() {
			w := &nopWriter{h: http.Header{}}
			reqs := make([]*http.Request, probeKeys)
			for i := range reqs {
				reqs[i] = request(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}))
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for i := p; ; i++ {
				select {
				case <-g.stop:
					return
				default:
				}
				clear(w.h)
				n0, t0 := preemptions(), time.Now()
				g.lim.admit(w, reqs[i%probeKeys])
				d := time.Since(t0)
				raise(&g.probe, d)
				if preemptions() == n0 {
					raise(&g.probeOwn, d)
				}
				g.calls.Add(1)
				if d > 10*time.Millisecond {
					g.slow.Add(1)
				}
				time.Sleep(200 * time.Microsecond)
			}
		})
	}
	g.wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-g.stop:
				return
			case <-tick.C:
				raise(&g.late, time.Since(last)-time.Millisecond)
				last = time.Now()
			}
		}
	})
	// Sweeps every SweepInterval/10, so that they overlap every phase, on
	// a thread of their own whose preemptions are counted.
	tb := g.lim.state.local
	var n0 int64
	tb.betweenSteps = func(_ *shard, held time.Duration) {
		if n := preemptions(); n == n0 {
			raise(&g.step, held)
		} else {
			g.preempted.Add(1)
			n0 = n
		}
	}
	g.wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			select {
			case <-g.stop:
				return
			case <-time.After(SweepInterval / 10):
				n0 = preemptions()
				tb.sweep(monoNow())
			}
		}
	})
	return g
}

func (g *pauseRig) close() {
	close(g.stop)
	g.wg.Wait()
	g.set.Close()
}

func request(a netip.Addr) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = netip.AddrPortFrom(a, 1).String()
	return r
}

func raise(v *atomic.Int64, d time.Duration) {
	for {
		cur := v.Load()
		if int64(d) <= cur || v.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// benchPauses: one goroutine inserts one million distinct keys (10.x.y.z,
// one request each) through the limiter's decision path as fast as it
// can; each key's bucket is full again 5 s later, so the keys expire and
// are swept while the probers, the sweeps and the ticker run; the
// iteration ends when the table is back to the probers' keys. Reported:
// the longest decision of a prober (max-allow-ms) and the share over
// 10 ms, of the inserter (max-insert-ms: evictions and map growth
// included), the longest a tick came late (max-tick-late-ms), a sweep's
// longest hold of a shard's lock (max-hold-ms), the longest GC
// stop-the-world pause (max-gc-pause-ms, the upper bound of its histogram
// bucket) and the most keys held. All are wall times: on a busy machine
// they include being descheduled, and with the inserter on one of two
// cores, waiting for the Go scheduler; the references busy (the same
// inserter loop parsing and hashing the address instead of deciding) and
// idle (no inserter) measure those alone.
func benchPauses(b *testing.B)     { pauses(b, true) }
func benchBusyPauses(b *testing.B) { pauses(b, false) }

func pauses(b *testing.B, decide bool) {
	const keys = 1_000_000
	var insert time.Duration
	var stats pauseStats
	seed := maphash.MakeSeed()
	var sink uint64
	for b.Loop() {
		before := pauseCounts()
		g := newPauseRig(b, 5*time.Second)
		w := &nopWriter{h: http.Header{}}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		var buf []byte
		for i := range keys {
			// 10.0.0.0/8 holds 2^24 addresses; a /32 is one key.
			buf = strconv.AppendUint(append(buf[:0], "10."...), uint64(i>>16&255), 10)
			buf = strconv.AppendUint(append(buf, '.'), uint64(i>>8&255), 10)
			buf = strconv.AppendUint(append(buf, '.'), uint64(i&255), 10)
			r.RemoteAddr = string(append(buf, ":1"...))
			clear(w.h)
			t0 := time.Now()
			if decide {
				g.lim.admit(w, r)
			} else {
				sink ^= maphash.Comparable(seed, remoteAddr(w, r))
			}
			insert = max(insert, time.Since(t0))
			if i%10_000 == 0 {
				g.peak.Store(max(g.peak.Load(), int64(g.lim.state.local.len())))
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for decide && g.lim.state.local.len() > probeKeys && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		left := g.lim.state.local.len()
		g.close()
		if left > probeKeys {
			b.Fatalf("%d keys held 30 s after the last insert, want the %d probe keys at most", left, probeKeys)
		}
		stats.add(g, before)
	}
	b.ReportMetric(float64(insert)/1e6, "max-insert-ms")
	stats.report(b)
	runtime.KeepAlive(sink)
}

// benchIdlePauses is the reference of benchPauses on the same machine in
// the same run: the probers, ticker and sweeps alone, on the probers' keys,
// for 3 s.
func benchIdlePauses(b *testing.B) {
	var stats pauseStats
	for b.Loop() {
		before := pauseCounts()
		g := newPauseRig(b, 5*time.Second)
		time.Sleep(3 * time.Second)
		g.close()
		stats.add(g, before)
	}
	stats.report(b)
}

type pauseStats struct {
	probe, probeOwn, late, hold, step time.Duration
	gc                                float64
	peak, calls, slow, preempted      int64
}

func (s *pauseStats) add(g *pauseRig, before *metrics.Float64Histogram) {
	s.probe = max(s.probe, time.Duration(g.probe.Load()))
	s.late = max(s.late, time.Duration(g.late.Load()))
	s.hold = max(s.hold, time.Duration(g.lim.state.local.longestHold.Load()))
	s.gc = max(s.gc, maxPauseSince(before))
	s.peak = max(s.peak, g.peak.Load())
	s.probeOwn = max(s.probeOwn, time.Duration(g.probeOwn.Load()))
	s.step = max(s.step, time.Duration(g.step.Load()))
	s.preempted += g.preempted.Load()
	s.calls += g.calls.Load()
	s.slow += g.slow.Load()
}

func (s *pauseStats) report(b *testing.B) {
	b.ReportMetric(float64(s.probe)/1e6, "max-allow-ms")
	b.ReportMetric(float64(s.probeOwn)/1e6, "max-allow-unpreempted-ms")
	b.ReportMetric(float64(s.step)/1e6, "max-step-unpreempted-ms")
	b.ReportMetric(float64(s.preempted), "steps-preempted")
	b.ReportMetric(float64(s.late)/1e6, "max-tick-late-ms")
	b.ReportMetric(float64(s.hold)/1e6, "max-hold-ms")
	b.ReportMetric(s.gc*1e3, "max-gc-pause-ms")
	b.ReportMetric(float64(s.peak), "peak-keys")
	b.ReportMetric(float64(s.slow)/float64(max(1, s.calls))*100, "%allow-over-10ms")
}

// benchMapGrowth inserts into one Go map of a shard's most keys
// (maxShardKeys) and into one of 390,625 (a shard of 10^8 keys had shards
// not been scaled), timing every insert, next to a store into a slice in
// the same loop (the reference: it never stalls). steady-max-insert-us is
// the worst a map's growth stalls its shard (see steady), max-insert-us
// the longest single insert with the machine's noise.
func benchMapGrowth(b *testing.B) {
	for _, n := range []int{maxShardKeys, 100_000_000 / minShards} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var raw time.Duration
			var inserts, stores steady
			ref := make([]int64, n)
			for b.Loop() {
				m := make(map[uint64]int64)
				for i := range n {
					t0 := time.Now()
					m[uint64(i)*0x9E3779B97F4A7C15+1] = int64(i)
					t1 := time.Now()
					ref[i] = int64(i)
					stores.note(i, time.Since(t1))
					inserts.note(i, t1.Sub(t0))
					raw = max(raw, t1.Sub(t0))
				}
				inserts.next()
				stores.next()
			}
			b.ReportMetric(float64(raw)/1e3, "max-insert-us")
			b.ReportMetric(float64(inserts.worst())/1e3, "steady-max-insert-us")
			b.ReportMetric(float64(stores.worst())/1e3, "steady-max-store-us")
		})
	}
}

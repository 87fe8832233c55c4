package healthd

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// scaleConfig is nVIPs VIPs sharing the same nBackends backends, with one
// TCP check per backend (shared by every VIP).
func scaleConfig(nVIPs, nBackends int, tableSize uint32) string {
	var b strings.Builder
	b.WriteString("vips:\n")
	for v := range nVIPs {
		fmt.Fprintf(&b, "  - address: 203.0.%d.%d:80/tcp\n    table_size: %d\n    check: { kind: tcp, port: 80 }\n    backends:\n", 100+v/250, 1+v%250, tableSize)
		for i := range nBackends {
			fmt.Fprintf(&b, "      - { address: 198.51.%d.%d }\n", 100+i/250, 1+i%250)
		}
	}
	return b.String()
}

type scaleRig struct {
	load  time.Duration // applying the config
	d     *Daemon
	clock *fakeClock
	ids   []string // check IDs, one per backend
}

func newScaleRig(b *testing.B, dp Datapath, nVIPs, nBackends int, tableSize uint32) *scaleRig {
	b.Helper()
	c, err := ParseConfig([]byte(scaleConfig(nVIPs, nBackends, tableSize)))
	if err != nil {
		b.Fatal(err)
	}
	clock := newFakeClock()
	d, err := New(Options{Datapath: dp, Clock: clock, Prober: &fakeProber{}, MaxBackends: uint32(nVIPs*nBackends + 1)})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := d.Apply(c); err != nil {
		b.Fatal(err)
	}
	r := &scaleRig{d: d, clock: clock, load: time.Since(start)}
	for id := range d.checks {
		r.ids = append(r.ids, id)
	}
	for _, id := range r.ids {
		d.HealthChanged(id, HealthHealthy, "", clock.Now())
	}
	clock.fire()
	if d.lastErr != nil {
		b.Fatal(d.lastErr)
	}
	return r
}

// flip turns one backend shared by every VIP unhealthy or healthy again, and
// returns the time from the event to every table installed (the debounce
// delay, Options.Debounce, comes on top).
func (r *scaleRig) flip(b *testing.B, state string) time.Duration {
	start := time.Now()
	r.d.HealthChanged(r.ids[0], state, "", r.clock.Now())
	r.clock.fire()
	el := time.Since(start)
	if r.d.lastErr != nil {
		b.Fatal(r.d.lastErr)
	}
	return el
}

func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// BenchmarkScaleFlip: 1,000 VIPs × 100 backends from config (65537-slot
// tables) on the in-memory datapath (the loader's maps hold 4,095 backend
// IDs, fewer than the 100,000 VIP-backend pairs); one backend shared by all
// VIPs flips unhealthy, then healthy. Reported: seconds from the event to all
// 1,000 tables installed (budget < 1 s), the daemon's heap, and as a
// reference one Maglev build of the same set in the same run.
func BenchmarkScaleFlip(b *testing.B) {
	const nVIPs, nBackends, size = 1000, 100, 65537
	before := heapMB()
	dp := NewMemDatapath()
	dp.DiscardTables = true
	dp.MaxBackends = nVIPs*nBackends + 1
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	heap := heapMB() - before
	ref := referenceBuild(b, nBackends, size)
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		state := HealthUnhealthy
		if i%2 == 1 {
			state = HealthHealthy
		}
		total += r.flip(b, state)
	}
	per := total.Seconds() / float64(b.N)
	b.ReportMetric(per, "s-event-to-installed")
	b.ReportMetric(per/ref.Seconds(), "x-one-maglev-build")
	b.ReportMetric(ref.Seconds(), "s-reference-build")
	b.ReportMetric(r.load.Seconds(), "s-initial-load")
	b.ReportMetric(heap, "MB-heap")
	if r.d.stats.installs < nVIPs {
		b.Fatalf("only %d tables installed", r.d.stats.installs)
	}
}

// BenchmarkScaleFlipLoader is the same on the real loader with what its
// maps hold: 40 VIPs × 100 backends (4,000 backend IDs).
func BenchmarkScaleFlipLoader(b *testing.B) {
	testutil.RequirePrivileged(b)
	const nVIPs, nBackends, size = 40, 100, 65537
	dp, err := loader.Load(loader.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	ref := referenceBuild(b, nBackends, size)
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		state := HealthUnhealthy
		if i%2 == 1 {
			state = HealthHealthy
		}
		total += r.flip(b, state)
	}
	per := total.Seconds() / float64(b.N)
	b.ReportMetric(per, "s-event-to-installed")
	b.ReportMetric(per/ref.Seconds(), "x-one-maglev-build")
	b.ReportMetric(ref.Seconds(), "s-reference-build")
	b.ReportMetric(r.load.Seconds(), "s-initial-load")
}

// referenceBuild times one Maglev build of n backends, the unit of work a
// flip cannot avoid.
func referenceBuild(b *testing.B, n int, size uint32) time.Duration {
	bs := make([]maglev.Backend, n)
	for i := range bs {
		bs[i] = maglev.Backend{Key: fmt.Sprintf("198.51.%d.%d", 100+i/250, 1+i%250), Weight: 1}
	}
	const runs = 5
	start := time.Now()
	for range runs {
		if _, err := maglev.Build(bs, size); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / runs
}

// BenchmarkScaleAPIChange: one backend added to and removed from one VIP
// while 1,000 VIPs × 100 backends are loaded: what an API change costs when
// every reconcile walks the whole state.
func BenchmarkScaleAPIChange(b *testing.B) {
	const nVIPs, nBackends, size = 1000, 100, 65537
	dp := NewMemDatapath()
	dp.DiscardTables = true
	dp.MaxBackends = nVIPs*nBackends + 10
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	k := mustKey(b, "203.0.100.1:80/tcp")
	b.ResetTimer()
	for range b.N {
		if err := r.d.AddBackend(k, BackendConfig{Address: "198.51.200.1"}); err != nil {
			b.Fatal(err)
		}
		if err := r.d.RemoveBackend(k, netip.MustParseAddr("198.51.200.1")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(2*b.N), "s/change")
}

package healthd

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	runtimemetrics "runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/healthdtest"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
	"github.com/xlb-project/xlb/maglev"
)

// scaleConfig is nVIPs VIPs sharing the same nBackends backends, with one
// TCP check per backend (shared by every VIP), and backend IDs for all
// pairs with a few to spare.
func scaleConfig(nVIPs, nBackends int, tableSize uint32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "max_backends: %d\nvips:\n", nVIPs*nBackends+10)
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
	d, err := New(Options{Datapath: dp, Clock: clock, Prober: &fakeProber{}, MaxBackends: uint32(nVIPs*nBackends + 10)})
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

// flipCost is what one flip took.
type flipCost struct {
	wall, cpu time.Duration
	phases    reconcilePhases
	gcs       uint64 // GC cycles that ended during the flip
}

// flip turns one backend shared by every VIP unhealthy or healthy again, and
// returns the time from the event to every table installed (the debounce
// delay, Options.Debounce, comes on top), the CPU time the process spent
// meanwhile (user and system, all threads): on a busy machine the first
// includes waiting for a CPU, the second does not; the reconcile's phases
// and the GC cycles that ended meanwhile.
func (r *scaleRig) flip(b *testing.B, state string) flipCost {
	gcs := gcCycles()
	cpu := processCPU(b)
	start := time.Now()
	r.d.HealthChanged(r.ids[0], state, "", r.clock.Now())
	r.clock.fire()
	c := flipCost{wall: time.Since(start), cpu: processCPU(b) - cpu, phases: r.d.stats.lastPhases, gcs: gcCycles() - gcs}
	if r.d.lastErr != nil {
		b.Fatal(r.d.lastErr)
	}
	return c
}

// gcCycles is the number of GC cycles completed so far.
func gcCycles() uint64 {
	s := []runtimemetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	runtimemetrics.Read(s)
	return s[0].Value.Uint64()
}

// processCPU is the CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// BenchmarkScaleFlip: 1,000 VIPs × 100 backends from config (65537-slot
// tables) on the in-memory datapath (BenchmarkScaleFlipLoader does the same
// on the real loader); one backend shared by all VIPs flips unhealthy, then healthy. Reported: seconds from the event to all
// 1,000 tables installed (target 100 ms, docs/performance.md), the CPU time of a
// flip, the daemon's heap, and as a
// reference one Maglev build of the same set in the same run.
func BenchmarkScaleFlip(b *testing.B) {
	const nVIPs, nBackends, size = 1000, 100, 65537
	before := heapMB()
	dp := healthdtest.NewMemDatapath()
	dp.DiscardTables = true
	dp.MaxBackends = nVIPs*nBackends + 10
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	heap := heapMB() - before
	ref := referenceBuild(b, nBackends, size)
	var total, cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		state := HealthUnhealthy
		if i%2 == 1 {
			state = HealthHealthy
		}
		c := r.flip(b, state)
		total += c.wall
		cpu += c.cpu
	}
	per := total.Seconds() / float64(b.N)
	b.ReportMetric(per, "s-event-to-installed")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "s-cpu-per-flip")
	b.ReportMetric(per/ref.Seconds(), "x-one-maglev-build")
	b.ReportMetric(ref.Seconds(), "s-reference-build")
	b.ReportMetric(r.load.Seconds(), "s-initial-load")
	b.ReportMetric(heap, "MB-heap")
	if r.d.stats.installs < nVIPs {
		b.Fatalf("only %d tables installed", r.d.stats.installs)
	}
}

// BenchmarkScaleFlipLoader is the same on the real loader, whose backend
// maps are sized for the 100,000 VIP-backend pairs (Options.MaxBackends).
// Reported besides the times: the Go heap the daemon and loader hold, and
// the kernel memory (memlock) of the maps made for it, inner table maps
// included.
func BenchmarkScaleFlipLoader(b *testing.B) {
	testutil.RequirePrivileged(b)
	const nVIPs, nBackends, size = 1000, 100, 65537
	before := heapMB()
	firstMap := lastMapID(b)
	dp, err := loader.Load(loader.Options{MaxBackends: nVIPs*nBackends + 10, FlowTableSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	heap := heapMB() - before
	kernel, maps := mapMemlockMB(b, firstMap)
	ref := referenceBuild(b, nBackends, size)
	var total, cpu time.Duration
	var worst flipCost
	var gcs uint64
	b.ResetTimer()
	for i := range b.N {
		state := HealthUnhealthy
		if i%2 == 1 {
			state = HealthHealthy
		}
		c := r.flip(b, state)
		total += c.wall
		cpu += c.cpu
		gcs += c.gcs
		if c.wall > worst.wall {
			worst = c
		}
	}
	b.StopTimer()
	per := total.Seconds() / float64(b.N)
	// Flips patch the installed tables in place: no inner map is made, so
	// the maps and their kernel memory after the flips are those before.
	kernelAfter, mapsAfter := mapMemlockMB(b, firstMap)
	b.ReportMetric(per, "s-event-to-installed")
	// The worst flip, split: its CPU time (more wall than CPU: it waited
	// for a CPU), its phases (planTable, installTables, the rest of
	// reconcile), and whether a GC cycle ended during it.
	b.ReportMetric(worst.wall.Seconds(), "s-worst-flip")
	b.ReportMetric(worst.cpu.Seconds(), "s-worst-flip-cpu")
	b.ReportMetric(worst.phases.plan.Seconds(), "s-worst-flip-plan")
	b.ReportMetric(worst.phases.install.Seconds(), "s-worst-flip-install")
	b.ReportMetric(worst.phases.finish.Seconds(), "s-worst-flip-finish")
	b.ReportMetric(float64(worst.gcs), "gcs-worst-flip")
	b.ReportMetric(float64(gcs)/float64(b.N), "gcs-per-flip")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "s-cpu-per-flip")
	b.ReportMetric(per/ref.Seconds(), "x-one-maglev-build")
	b.ReportMetric(ref.Seconds(), "s-reference-build")
	b.ReportMetric(r.load.Seconds(), "s-initial-load")
	b.ReportMetric(heap, "MB-heap")
	b.ReportMetric(kernel, "MB-maps-kernel")
	b.ReportMetric(kernelAfter, "MB-maps-kernel-after-flips")
	b.ReportMetric(float64(maps), "maps")
	b.ReportMetric(float64(mapsAfter), "maps-after-flips")
	if r.d.stats.installs < nVIPs {
		b.Fatalf("only %d tables installed", r.d.stats.installs)
	}
}

// lastMapID is the highest BPF map ID now; maps made later have higher IDs.
func lastMapID(b *testing.B) ebpf.MapID {
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return id
		}
		if err != nil {
			b.Fatalf("list bpf maps: %v", err)
		}
		id = next
	}
}

// mapMemlockMB sums the kernel memory (memlock, as /proc/PID/fdinfo shows
// it) of the xdp_lb maps made after map ID after: the loader's and the
// inner table maps. Maps other processes make meanwhile are told apart by
// name.
func mapMemlockMB(b *testing.B, after ebpf.MapID) (float64, int) {
	var sum uint64
	n := 0
	for id := after; ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			b.Fatalf("list bpf maps: %v", err)
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			b.Fatalf("info of map %d: %v", id, err)
		}
		if !xlbMapNames[info.Name] && !strings.HasPrefix(info.Name, "table") {
			continue
		}
		if ml, ok := info.Memlock(); ok {
			sum += ml
			n++
		}
	}
	return float64(sum) / (1 << 20), n
}

// xlbMapNames are the maps of xdp_lb (bpf/maps.h) as the kernel names them
// (at most 15 characters).
var xlbMapNames = map[string]bool{
	"vips": true, "backends": true, "flows": true, "vip_filter": true, "flow_cache": true,
	"egress": true, "settings": true, "vip_retired": true, "backend_stats": true, "exits": true,
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
	dp := healthdtest.NewMemDatapath()
	dp.DiscardTables = true
	dp.MaxBackends = nVIPs*nBackends + 10
	r := newScaleRig(b, dp, nVIPs, nBackends, size)
	k := mustKey(b, "203.0.100.1:80/tcp")
	b.ResetTimer()
	for range b.N {
		if err := r.d.AddBackend(k, api.BackendConfig{Address: "198.51.200.1"}); err != nil {
			b.Fatal(err)
		}
		if err := r.d.RemoveBackend(k, netip.MustParseAddr("198.51.200.1")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(2*b.N), "s/change")
}

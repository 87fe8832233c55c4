package lab

import (
	"fmt"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

const (
	pathFrames = 100_000 // per measured run
	pathWarmUp = 20_000  // before it: fills the flow table, warms caches
	pathRounds = 5       // medians of, cases interleaved
)

// BenchmarkPacketPath reports each rig case's in-path ns per packet from
// the kernel's BPF run-time statistics (run_time_ns / run_cnt of the
// program under test) next to xdp_swap's, on the rig of BenchmarkPacketRate
// with the frames sent through a packet socket (Rig.RunSocket, 64 frames
// per sendmmsg) instead of live frames: it runs where the kernel refuses
// live frames. Every program runs once per frame in the receiving veth's
// NAPI poll with warm caches, as under real load; the statistics add tens
// of ns per run to every row, xdp_swap's included. Run it with -benchtime
// 1x.
func BenchmarkPacketPath(b *testing.B) {
	rb := newRigBench(b)
	type figures struct{ ns, returned float64 }
	for b.Loop() {
		rounds := make([][]figures, len(rb.cases))
		for r := range pathRounds {
			for k := range rb.cases {
				i := (r + k) % len(rb.cases)
				c := rb.cases[i]
				var fig figures
				err := rb.ns.Do(func() error {
					var err error
					fig.ns, fig.returned, err = runPath(rb, c)
					return err
				})
				if err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
				rounds[i] = append(rounds[i], fig)
			}
		}
		median := func(fs []figures, get func(figures) float64) float64 {
			v := make([]float64, len(fs))
			for i, f := range fs {
				v[i] = get(f)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		ref := median(rounds[0], func(f figures) float64 { return f.ns })
		// Printed, not logged: the benchmark's log is cut at ten lines.
		fmt.Printf("%d frames per case and round, median of %d rounds\n", pathFrames, pathRounds)
		fmt.Printf("%-26s %10s %9s %9s\n", "program", "ns/packet", "ratio", "returned")
		for i, c := range rb.cases {
			ns := median(rounds[i], func(f figures) float64 { return f.ns })
			ret := median(rounds[i], func(f figures) float64 { return f.returned })
			fmt.Printf("%-26s %10.1f %8.2fx %8.1f%%\n", c.name, ns, ns/ref, 100*ret)
			b.ReportMetric(ns/ref, "x-"+testutil.MetricUnit(c.name))
		}
		b.ReportMetric(ref, "swap_ns/pkt")
	}
}

// runPath measures one round of case c: attach, warm up, then send
// pathFrames with the run-time statistics on; returns ns per run of the
// program under test and the share of frames that came back.
func runPath(rb *rigBench, c rigCase) (float64, float64, error) {
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return 0, 0, err
	}
	one.Set(rigCPU)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return 0, 0, err
	}
	defer unix.SchedSetaffinity(0, &old)
	prog, detach, err := c.attach()
	if err != nil {
		return 0, 0, err
	}
	defer detach()
	frame := c.frame(rb.dutMAC, rb.genMAC)
	if _, err := rb.rig.RunSocket(frame, c.load, pathWarmUp); err != nil {
		return 0, 0, err
	}
	stats, err := loader.EnableRunStats()
	if err != nil {
		return 0, 0, err
	}
	defer stats.Close()
	t0, n0, err := prog.RunStats()
	if err != nil {
		return 0, 0, err
	}
	res, err := rb.rig.RunSocket(frame, c.load, pathFrames)
	if err != nil {
		return 0, 0, err
	}
	t1, n1, err := prog.RunStats()
	if err != nil {
		return 0, 0, err
	}
	if n1-n0 < pathFrames {
		return 0, 0, fmt.Errorf("program ran %d times for %d frames", n1-n0, pathFrames)
	}
	return float64(t1-t0) / float64(n1-n0), float64(res.Returned) / float64(res.Sent), nil
}

package loader

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
)

// benchPath is one path through a program measured by BenchmarkXDPCost.
type benchPath struct {
	name string
	prog *Program
	pkt  []byte
	want Action
	// vary, if set, changes pkt before call i.
	vary func(pkt []byte, i int)
	// perFigure is how many calls one figure covers (default 1): a TCP
	// handshake's SYN and ACK are reported together.
	perFigure int
	rounds    []time.Duration // mean ns per figure of each round
}

// tcpFlagsOff is where the TCP flags sit in an untagged IPv4 frame.
const tcpFlagsOff = 14 + 20 + 13

// setClient writes a distinct client address and port for i into an IPv4
// TCP or UDP frame: each i is another flow.
func setClient(pkt []byte, i int) {
	binary.BigEndian.PutUint16(pkt[14+20:], uint16(1024+i%60000))
	pkt[14+12+2] = byte(i / 60000)
	pkt[14+12+1] = byte(i / 60000 >> 8)
}

// BenchmarkXDPCost measures ns per packet of each path of xdp_lb with
// BPF_PROG_RUN, repeat = 1, in a loop, the calling thread pinned to one CPU,
// next to xdp_swap measured the same way in the same run (DESIGN.md,
// Measuring). The paths take turns in 20 rounds so that noise from other
// load hits all alike; the figure is the median of the rounds' means.
// XLB_BENCH_CALLS sets the calls per path (default 200000). Run with
// -benchtime=1x.
func BenchmarkXDPCost(b *testing.B) {
	// The default flow table: the flows the new-flow rows insert (UDP,
	// handshakes) fill under a third of it, so their figures are inserts
	// without eviction. A SYN inserts nothing (bpf/flowcache.h).
	flowTableSizeForTests = DefaultFlowTableSize
	d := newTestDatapath(b)
	flowTableSizeForTests = 1 << 16
	swap, err := LoadSwap()
	must(b, err)
	b.Cleanup(func() { swap.Close() })

	calls := 200000
	if v := envInt("XLB_BENCH_CALLS"); v > 0 {
		calls = v
	}
	const manyFlows = 1 << 16
	syn4 := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	est4 := tcpTo(vip4, client4, 80, testutil.TCPAck)
	est6 := tcpTo(vip6, client6, 80, testutil.TCPAck)
	udp4 := udpTo(vip4, client4, 53)
	ptb := ptb4(est4)
	miss := tcpTo(vip4.Prev(), client4, 80, testutil.TCPAck)
	many := tcpTo(vip4, client4, 80, testutil.TCPAck)
	many.Src = client4.Next()
	newFlows := syn4
	newFlows.Src = client4.Next().Next()
	newUDP := udp4
	newUDP.Src = newFlows.Src.Next()
	statelessUDP := udpTo(vip4, newUDP.Src.Next(), 5353)
	handshake := syn4
	handshake.Src = statelessUDP.Src.Next()
	mixed := est4
	mixed.Src = handshake.Src.Next()
	const mixedFlows = 1024
	mixedNew := 0
	paths := []*benchPath{
		{name: "xdp_swap (reference)", prog: swap, pkt: est4.Bytes(), want: ActionTX},
		{name: "non-VIP pass", prog: d.Program(), pkt: miss.Bytes(), want: ActionPass},
		{name: "established TCP IPv4", prog: d.Program(), pkt: est4.Bytes(), want: ActionTX},
		{name: "established TCP IPv6", prog: d.Program(), pkt: est6.Bytes(), want: ActionTX},
		{name: "established UDP IPv4", prog: d.Program(), pkt: udp4.Bytes(), want: ActionTX},
		{name: "ICMP frag needed", prog: d.Program(), pkt: ptb.Bytes(), want: ActionTX},
		{name: "TCP SYN (selection)", prog: d.Program(), pkt: syn4.Bytes(), want: ActionTX},
		{name: "new TCP flow per call", prog: d.Program(), pkt: newFlows.Bytes(), want: ActionTX, vary: setClient},
		{name: "new UDP flow per call", prog: d.Program(), pkt: newUDP.Bytes(), want: ActionTX, vary: setClient},
		{name: "UDP, stateless VIP", prog: d.Program(), pkt: statelessUDP.Bytes(), want: ActionTX, vary: setClient},
		// A new connection's SYN and the ACK that puts it into the flow
		// table, one figure for the pair.
		{name: "TCP handshake (SYN+ACK)", prog: d.Program(), pkt: handshake.Bytes(), want: ActionTX, perFigure: 2,
			vary: func(pkt []byte, i int) {
				setClient(pkt, i/2)
				pkt[tcpFlagsOff] = byte(testutil.TCPSyn)
				if i%2 == 1 {
					pkt[tcpFlagsOff] = byte(testutil.TCPAck)
				}
			}},
		// 9 packets in 10 of 1,024 established flows, the tenth a new
		// flow's SYN.
		{name: "mixed 90% est, 10% new", prog: d.Program(), pkt: mixed.Bytes(), want: ActionTX,
			vary: func(pkt []byte, i int) {
				pkt[tcpFlagsOff] = byte(testutil.TCPAck)
				if i%10 != 9 {
					setClient(pkt, i*7919%mixedFlows)
					return
				}
				mixedNew++
				setClient(pkt, mixedFlows+mixedNew)
				pkt[tcpFlagsOff] = byte(testutil.TCPSyn)
			}},
		{name: "established, 64k flows", prog: d.Program(), pkt: many.Bytes(), want: ActionTX,
			vary: func(pkt []byte, i int) { setClient(pkt, i%manyFlows) }},
	}
	katran := katranCostPaths(b, calls)
	paths = append(paths, katran.paths...)
	// Establish the flows the "established" paths hit.
	for _, p := range paths {
		n := 1
		switch p.name {
		case "established, 64k flows":
			n = manyFlows
		case "mixed 90% est, 10% new":
			n = 10 * mixedFlows // 9 in 10 calls: every established flow
		}
		for i := range n {
			if p.vary != nil {
				p.vary(p.pkt, i)
			}
			if _, _, err := p.prog.Run(p.pkt); err != nil {
				b.Fatal(err)
			}
		}
	}

	pinThread(b)
	const rounds = 20
	perRound := calls / rounds
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			for _, p := range paths {
				var total time.Duration
				for i := range perRound {
					if p.vary != nil {
						p.vary(p.pkt, r*perRound+i)
					}
					act, dur, err := p.prog.Time(p.pkt)
					if err != nil {
						b.Fatal(err)
					}
					if act != p.want {
						b.Fatalf("%s: verdict %s, want %s", p.name, act, p.want)
					}
					total += dur
				}
				p.rounds = append(p.rounds, total*time.Duration(max(p.perFigure, 1))/time.Duration(perRound))
			}
		}
	}
	b.StopTimer()
	// Check the verdict and output of the last packet of each path.
	for _, p := range paths {
		act, out, err := p.prog.Run(p.pkt)
		must(b, err)
		if act != p.want || (act == ActionTX && len(out) < len(p.pkt)) {
			b.Fatalf("%s: last run gave %s with %d bytes", p.name, act, len(out))
		}
	}
	median := func(p *benchPath) float64 {
		r := slices.Clone(p.rounds)
		slices.Sort(r)
		return float64(r[len(r)/2])
	}
	ref := median(paths[0])
	fmt.Printf("%d calls per path, median of %d rounds, flow table %d, per-CPU LRU %v\n", calls, rounds, DefaultFlowTableSize, perCPULRUForTests)
	fmt.Printf("%-26s %10s %8s\n", "path", "ns", "ratio")
	for _, p := range paths {
		ns := median(p)
		fmt.Printf("%-26s %10.0f %7.2fx\n", p.name, ns, ns/ref)
		b.ReportMetric(ns/ref, "x-"+testutil.MetricUnit(p.name))
	}
	b.ReportMetric(ref, "ns-swap")
	katran.report(b)
}

// BenchmarkXDPHot measures the work of xdp_lb's established path apart
// from memory: BPF_PROG_RUN with repeat = 1,000,000 on one established TCP
// flow of an L2 DSR VIP (the forwarding mode that leaves the frame as it
// found it, so every repeat takes the same path), everything in the CPU
// caches, next to xdp_swap run the same way. The figures are ns per run,
// the fastest of 7 rounds by the wall clock (the kernel reports whole ns);
// the test loop's own cost is in both. Run with -benchtime=1x.
func BenchmarkXDPHot(b *testing.B) {
	d := newTestDatapath(b)
	swap, err := LoadSwap()
	must(b, err)
	b.Cleanup(func() { swap.Close() })
	must(b, d.PutVIP(VIPKey{vip4DSR, 80, 6}, VIP{ID: 8, Mode: ModeL2DSR, TableSize: tableSize}))
	must(b, d.SetTable(8, roundRobin(tableSize, 1, 2, 3, 4)))
	pkt := tcpTo(vip4DSR, client4, 80, testutil.TCPAck).Bytes()
	// Twice: the second packet puts the flow in the flow cache.
	for range 2 {
		if act, _, err := d.Program().Run(pkt); err != nil || act != ActionTX {
			b.Fatalf("xdp_lb: %s, %v; want XDP_TX", act, err)
		}
	}
	pinThread(b)
	const repeat = 1_000_000
	progs := []*Program{swap, d.Program()}
	best := []float64{math.Inf(1), math.Inf(1)}
	for range b.N {
		for range 7 {
			for i, p := range progs {
				t0 := time.Now()
				ret, _, err := p.prog.Benchmark(pkt, repeat, nil)
				ns := float64(time.Since(t0).Nanoseconds()) / repeat
				if err != nil || Action(ret) != ActionTX {
					b.Fatalf("run %d: %s, %v; want XDP_TX", i, Action(ret), err)
				}
				best[i] = min(best[i], ns)
			}
		}
	}
	fmt.Printf("hot loop, one established L2 DSR flow: xdp_swap %.1f ns, xdp_lb %.1f ns (+%.1f)\n", best[0], best[1], best[1]-best[0])
	b.ReportMetric(best[0], "ns-swap")
	b.ReportMetric(best[1], "ns-lb")
}

// pinThread keeps the benchmark on one thread, and that thread on the last
// CPU, until it ends.
func pinThread(tb testing.TB) {
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("read thread affinity: %v", err)
	}
	tb.Cleanup(func() {
		_ = unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	})
	set.Set(runtime.NumCPU() - 1)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		tb.Fatalf("pin thread: %v", err)
	}
}

func envInt(name string) int {
	var v int
	fmt.Sscan(os.Getenv(name), &v)
	return v
}

package loader

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
)

// benchPath is one path through xdp_lb measured by BenchmarkXDPCost.
type benchPath struct {
	name string
	prog *Program
	pkt  []byte
	want Action
	// vary, if set, changes pkt before call i (new flows).
	vary  func(pkt []byte, i int)
	total time.Duration
	calls int
}

// BenchmarkXDPCost measures ns per packet of each path with BPF_PROG_RUN,
// repeat = 1, in a loop, the calling thread pinned to one CPU, next to
// xdp_swap measured the same way in the same run (DESIGN.md, Measuring).
// The paths take turns in rounds so that noise hits all alike. Run with
// -benchtime=1x; XLB_BENCH_CALLS sets the calls per path (default 200000).
func BenchmarkXDPCost(b *testing.B) {
	// The default flow table: 200k new flows fill a fifth of it, so the
	// new-flow figure is an insert without eviction.
	flowTableSizeForTests = DefaultFlowTableSize
	d := newTestDatapath(b)
	flowTableSizeForTests = 1 << 16
	swap, err := LoadSwap()
	must(b, err)
	b.Cleanup(func() { swap.Close() })

	syn4 := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	est4 := tcpTo(vip4, client4, 80, testutil.TCPAck)
	est6 := tcpTo(vip6, client6, 80, testutil.TCPAck)
	udp4 := udpTo(vip4, client4, 53)
	ptb := ptb4(est4)
	miss := tcpTo(vip4.Prev(), client4, 80, testutil.TCPAck)
	newFlow := func(pkt []byte, i int) {
		// A distinct client address and port per call: every call is a
		// flow table miss, a Maglev lookup and an insert.
		binary.BigEndian.PutUint16(pkt[14+20:], uint16(i))
		pkt[14+12+2] = byte(i >> 16)
		pkt[14+12+1] = byte(i >> 24)
	}
	paths := []*benchPath{
		{name: "xdp_swap (reference)", prog: swap, pkt: est4.Bytes(), want: ActionTX},
		{name: "non-VIP pass", prog: d.Program(), pkt: miss.Bytes(), want: ActionPass},
		{name: "new TCP flow (SYN)", prog: d.Program(), pkt: syn4.Bytes(), want: ActionTX, vary: newFlow},
		{name: "established TCP flow IPv4", prog: d.Program(), pkt: est4.Bytes(), want: ActionTX},
		{name: "established TCP flow IPv6", prog: d.Program(), pkt: est6.Bytes(), want: ActionTX},
		{name: "established UDP flow IPv4", prog: d.Program(), pkt: udp4.Bytes(), want: ActionTX},
		{name: "ICMP frag needed", prog: d.Program(), pkt: ptb.Bytes(), want: ActionTX},
	}
	// Establish the flows the "established" paths hit.
	for _, p := range paths {
		if _, _, err := p.prog.Run(p.pkt); err != nil {
			b.Fatal(err)
		}
	}

	calls := 200000
	if v := envInt("XLB_BENCH_CALLS"); v > 0 {
		calls = v
	}
	const rounds = 20
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(runtime.NumCPU() - 1)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Fatalf("pin thread: %v", err)
	}
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			for _, p := range paths {
				for i := range calls / rounds {
					if p.vary != nil {
						p.vary(p.pkt, r*calls/rounds+i)
					}
					act, dur, err := p.prog.Time(p.pkt)
					if err != nil {
						b.Fatal(err)
					}
					if act != p.want {
						b.Fatalf("%s: verdict %s, want %s", p.name, act, p.want)
					}
					p.total += dur
					p.calls++
				}
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
	ref := float64(paths[0].total) / float64(paths[0].calls)
	fmt.Printf("%-28s %10s %8s\n", "path", "ns/packet", "ratio")
	for _, p := range paths {
		ns := float64(p.total) / float64(p.calls)
		fmt.Printf("%-28s %10.1f %7.2fx\n", p.name, ns, ns/ref)
		b.ReportMetric(ns/ref, "x-"+metricName(p.name))
	}
	b.ReportMetric(ref, "ns-swap")
}

func metricName(s string) string {
	out := []byte{}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			out = append(out, c)
		case len(out) > 0 && out[len(out)-1] != '-':
			out = append(out, '-')
		}
	}
	return string(out)
}

func envInt(name string) int {
	var v int
	fmt.Sscan(getenv(name), &v)
	return v
}

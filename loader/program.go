package loader

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Action is an XDP verdict.
type Action uint32

// The XDP verdicts.
const (
	ActionAborted Action = iota
	ActionDrop
	ActionPass
	ActionTX
	ActionRedirect
)

func (a Action) String() string {
	switch a {
	case ActionAborted:
		return "XDP_ABORTED"
	case ActionDrop:
		return "XDP_DROP"
	case ActionPass:
		return "XDP_PASS"
	case ActionTX:
		return "XDP_TX"
	case ActionRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("XDP_%d", uint32(a))
}

// Program is a loaded XDP program that packets can be run through with
// BPF_PROG_RUN, for tests and benchmarks.
type Program struct {
	prog *ebpf.Program
}

// outputRoom is what a program may add in front of a packet (an IPv6
// header) plus slack.
const outputRoom = 256

// Run runs the program once on pkt (at least 14 bytes) and returns the
// verdict and the packet as the program left it.
func (p *Program) Run(pkt []byte) (Action, []byte, error) {
	out := make([]byte, len(pkt)+outputRoom)
	opts := ebpf.RunOptions{Data: pkt, DataOut: out, Repeat: 1}
	ret, err := p.prog.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run xdp program: %w", err)
	}
	return Action(ret), opts.DataOut, nil
}

// Time runs the program once on pkt and returns the verdict and the run
// time the kernel measured (repeat = 1: one run, call overhead included).
func (p *Program) Time(pkt []byte) (Action, time.Duration, error) {
	ret, d, err := p.prog.Benchmark(pkt, 1, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("run xdp program: %w", err)
	}
	return Action(ret), d, nil
}

// Close releases the program.
func (p *Program) Close() error { return p.prog.Close() }

// LoadSwap loads xdp_swap, the minimal program that swaps the Ethernet
// addresses and returns XDP_TX: the reference the benchmarks compare with.
func LoadSwap() (*Program, error) {
	var objs swapObjects
	if err := loadSwapObjects(&objs, nil); err != nil {
		return nil, loadError("xdp_swap", err, true)
	}
	return &Program{prog: objs.XdpSwap}, nil
}

package loader

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestRigGenMatchesSocket: xdp_rig_gen (live frames) and the packet-socket
// fallback (setRigFlow) give frame n of a load the same bytes, so both rigs
// measure the same traffic: established flows by source port, and with
// NewEvery every n-th frame a flow never sent before, a SYN when TCP. The
// generator runs here through plain BPF_PROG_RUN, which returns the frame
// it wrote.
func TestRigGenMatchesSocket(t *testing.T) {
	testutil.RequirePrivileged(t)
	var gen riggenObjects
	if err := loadRiggenObjects(&gen, nil); err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	prog := &Program{prog: gen.XdpRigGen}
	// rig_seq is per CPU: one thread on one CPU, every CPU's count at 0.
	pinThread(t)
	cpus, err := ebpf.PossibleCPU()
	must(t, err)
	// Rig frames are 64 bytes: the generator rewrites that many.
	frame := func(p testutil.Packet) []byte {
		return append(p.Bytes(), make([]byte, rigHeaderLen)...)[:rigHeaderLen]
	}
	tcp := frame(tcpTo(vip4, client4, 80, testutil.TCPAck))
	udp := frame(udpTo(vip4, client4, 53))
	for _, tc := range []struct {
		name  string
		frame []byte
		load  RigLoad
	}{
		{"tcp established", tcp, RigLoad{Flows: 7}},
		{"tcp mixed", tcp, RigLoad{Flows: 7, NewEvery: 3}},
		{"udp new", udp, RigLoad{NewEvery: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, gen.RigSeq.Put(uint32(0), make([]uint32, cpus)))
			must(t, putRigTemplate(gen.RigTemplate, tc.frame, tc.load))
			seen := map[string]bool{}
			for n := range uint32(30) {
				act, out, err := prog.Run(tc.frame)
				must(t, err)
				want := append([]byte(nil), tc.frame...)
				setRigFlow(want, tc.load, n)
				if act != ActionTX || !bytes.Equal(out, want) {
					t.Fatalf("frame %d: %s %x, want XDP_TX %x", n, act, out, want)
				}
				seen[string(want[14+12:14+24])] = true
			}
			// The flows the frames name: Flows established ones plus one
			// per new frame.
			wantFlows := int(min(tc.load.Flows, 30))
			if tc.load.NewEvery > 0 {
				wantFlows = 30 / int(tc.load.NewEvery)
				if tc.load.NewEvery > 1 {
					wantFlows += int(tc.load.Flows)
				}
			}
			if len(seen) != wantFlows {
				t.Errorf("%d distinct flows in 30 frames, want %d", len(seen), wantFlows)
			}
		})
	}
}

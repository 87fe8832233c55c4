package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// loadRigCount loads xdp_rig_count with the given verdict.
func loadRigCount(verdict Action) (*rigcountObjects, error) {
	spec, err := loadRigcount()
	if err != nil {
		return nil, fmt.Errorf("load xdp_rig_count spec: %w", err)
	}
	if err := spec.Variables[rigcountVarVerdict].Set(uint32(verdict)); err != nil {
		return nil, fmt.Errorf("set xdp_rig_count verdict: %w", err)
	}
	var objs rigcountObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, loadError("xdp_rig_count", err, false)
	}
	return &objs, nil
}

// AttachPass attaches a program that passes every frame to ifname (in the
// calling thread's network namespace) with a netlink XDP attachment, which
// stays while the interface exists. veth hands XDP_TX frames to a peer
// without an XDP program only when something else wakes that peer, so the
// lab attaches this to the bridge-side peer of the balancer's veth.
func AttachPass(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach xdp pass to %s: %w", ifname, err)
	}
	objs, err := loadRigCount(ActionPass)
	if err != nil {
		return err
	}
	defer objs.Close()
	if err := netlink.LinkSetXdpFdWithFlags(l, objs.XdpRigCount.FD(), xdpFlagsDrvMode); err != nil {
		return fmt.Errorf("attach xdp pass to %s: %w", ifname, err)
	}
	return nil
}

// DetachPass removes the program AttachPass attached to ifname; it refuses
// to remove another program and fails with ErrNotAttached when there is
// none.
func DetachPass(ifname string) error {
	st, err := ReadDecap(ifname)
	if err != nil {
		return err
	}
	if st.ProgramID == 0 {
		return fmt.Errorf("detach xdp pass from %s: %w", ifname, ErrNotAttached)
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(st.ProgramID))
	if err != nil {
		return fmt.Errorf("open xdp program %d of %s: %w", st.ProgramID, ifname, err)
	}
	info, err := prog.Info()
	prog.Close()
	if err != nil {
		return fmt.Errorf("read xdp program %d of %s: %w", st.ProgramID, ifname, err)
	}
	if info.Name != "xdp_rig_count" {
		return fmt.Errorf("detach xdp pass from %s: %w: another XDP program (%s) is attached", ifname, ErrInvalid, info.Name)
	}
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("detach xdp pass from %s: %w", ifname, err)
	}
	flags := xdpFlagsDrvMode
	if st.Generic {
		flags = xdpFlagsSKBMode
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, -1, flags); err != nil {
		return fmt.Errorf("detach xdp pass from %s: %w", ifname, err)
	}
	return nil
}

// Rig is the packet-rate rig (DESIGN.md, Lab): a generator that injects
// frames with BPF_PROG_RUN in live-frames mode into one end of a veth pair
// (the generator's interface), the program under test attached to the other
// end, which sends them back with XDP_TX, and a counting program on the
// generator's interface that counts and drops what comes back.
type Rig struct {
	gen     riggenObjects
	count   *rigcountObjects
	ifindex int
	link    link.Link
	// socketSeq numbers the frames RunSocket sent, so that its new flows
	// stay new from run to run as the generator's do.
	socketSeq uint32
}

// RigLoad is what a rig run sends: frames of Flows established flows (the
// frame's source address with source ports 1024 .. 1024+Flows-1), and with
// NewEvery n, every n-th frame a flow never sent before (source port and
// the low half of the source address from a counter; a SYN when the frame
// is TCP). NewEvery 1 makes every frame a new flow.
type RigLoad struct {
	Flows    uint32
	NewEvery uint32
}

// Offsets in the rig's Ethernet + IPv4 (no options) frame, as in
// bpf/rig_gen.c.
const (
	rigSportOff    = 14 + 20
	rigSaddrLoOff  = 14 + 12 + 2
	rigProtoOff    = 14 + 9
	rigTCPFlagsOff = 14 + 20 + 13
	rigNewPorts    = 60000
	rigTCPSyn      = 0x02
)

// setRigFlow gives frame, a copy of the template, the flow of frame number
// n of load, as xdp_rig_gen does.
func setRigFlow(frame []byte, load RigLoad, n uint32) {
	if load.NewEvery > 0 && n%load.NewEvery == load.NewEvery-1 {
		u := n / load.NewEvery
		binary.BigEndian.PutUint16(frame[rigSportOff:], uint16(1024+u%rigNewPorts))
		binary.BigEndian.PutUint16(frame[rigSaddrLoOff:], uint16(1+u/rigNewPorts))
		if frame[rigProtoOff] == unix.IPPROTO_TCP {
			frame[rigTCPFlagsOff] = rigTCPSyn
		}
		return
	}
	binary.BigEndian.PutUint16(frame[rigSportOff:], uint16(1024+n%max(load.Flows, 1)))
}

// RigResult is one run of the rig.
type RigResult struct {
	Sent     uint64        // frames the generator injected
	Returned uint64        // frames counted back on the generator's interface
	Elapsed  time.Duration // wall time of the run
}

// Rate is frames per second returned.
func (r RigResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Returned) / r.Elapsed.Seconds()
}

// rigHeaderLen is the frame prefix the generator rewrites each time.
const rigHeaderLen = 64

// NewRig loads the generator and attaches the counting program to ifname,
// in the calling thread's network namespace.
func NewRig(ifname string) (*Rig, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("rig on %s: %w", ifname, err)
	}
	r := &Rig{ifindex: iface.Index}
	if err := loadRiggenObjects(&r.gen, nil); err != nil {
		return nil, loadError("xdp_rig_gen", err, true)
	}
	if r.count, err = loadRigCount(ActionDrop); err != nil {
		r.gen.Close()
		return nil, err
	}
	r.link, err = link.AttachXDP(link.XDPOptions{Program: r.count.XdpRigCount, Interface: iface.Index, Flags: link.XDPDriverMode})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("attach rig counter to %s: %w", ifname, err)
	}
	return r, nil
}

// Close detaches and releases everything.
func (r *Rig) Close() error {
	if r.link != nil {
		r.link.Close()
	}
	if r.count != nil {
		r.count.Close()
	}
	return r.gen.Close()
}

// xdpMD is struct xdp_md as BPF_PROG_RUN takes it.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Run injects frames frames, each a copy of frame (at least 64 bytes, an
// Ethernet + IPv4 + TCP or UDP frame) given a flow of load, and counts the
// frames that come back. The calling goroutine should be locked to one
// CPU: generator and both veth ends then run on it.
func (r *Rig) Run(frame []byte, load RigLoad, frames uint32) (RigResult, error) {
	if len(frame) < rigHeaderLen {
		return RigResult{}, fmt.Errorf("%w: rig frame of %d bytes: want at least %d", ErrInvalid, len(frame), rigHeaderLen)
	}
	if err := putRigTemplate(r.gen.RigTemplate, frame, load); err != nil {
		return RigResult{}, err
	}
	before, err := r.returned()
	if err != nil {
		return RigResult{}, err
	}
	start := time.Now()
	_, err = r.gen.XdpRigGen.Run(&ebpf.RunOptions{
		Data:      frame,
		Context:   xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(r.ifindex)},
		Repeat:    frames,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: 64,
	})
	elapsed := time.Since(start)
	if errors.Is(err, unix.EPERM) {
		return RigResult{}, fmt.Errorf("run rig generator: %w: %w", ErrLiveFramesRefused, err)
	}
	if err != nil {
		return RigResult{}, fmt.Errorf("run rig generator: %w", err)
	}
	after, err := r.returned()
	if err != nil {
		return RigResult{}, err
	}
	return RigResult{Sent: uint64(frames), Returned: after - before, Elapsed: elapsed}, nil
}

// putRigTemplate writes frame and load into xdp_rig_gen's template map m
// (struct rig_template).
func putRigTemplate(m *ebpf.Map, frame []byte, load RigLoad) error {
	var tmpl struct {
		Bytes    [rigHeaderLen]byte
		Flows    uint32
		NewEvery uint32
	}
	copy(tmpl.Bytes[:], frame)
	tmpl.Flows, tmpl.NewEvery = load.Flows, load.NewEvery
	if err := m.Put(uint32(0), &tmpl); err != nil {
		return fmt.Errorf("rig template: %w", err)
	}
	return nil
}

// rigSocketBatch is how many frames RunSocket hands the kernel per
// sendmmsg call.
const rigSocketBatch = 64

// RunSocket sends the frames Run would generate through an AF_PACKET socket
// on the generator's interface, rigSocketBatch frames per sendmmsg call:
// far slower than live frames, so it proves forwarding, not rate (the
// program under test still runs once per frame, in the receiving veth's
// NAPI poll, which is what the kernel's run-time statistics measure). Use
// it where the kernel refuses live frames (ErrLiveFramesRefused). The
// calling thread must be in the rig's network namespace.
func (r *Rig) RunSocket(frame []byte, load RigLoad, frames uint32) (RigResult, error) {
	if len(frame) < rigHeaderLen {
		return RigResult{}, fmt.Errorf("%w: rig frame of %d bytes: want at least %d", ErrInvalid, len(frame), rigHeaderLen)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return RigResult{}, fmt.Errorf("rig packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Ifindex: int32(r.ifindex), Halen: 6}
	copy(to.Addr[:], frame[:6])
	before, err := r.returned()
	if err != nil {
		return RigResult{}, err
	}
	bufs := make([][]byte, rigSocketBatch)
	iovs := make([]unix.Iovec, rigSocketBatch)
	msgs := make([]unix.Mmsghdr, rigSocketBatch)
	for i := range bufs {
		bufs[i] = make([]byte, len(frame))
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(frame))
		msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&to))
		msgs[i].Hdr.Namelen = unix.SizeofSockaddrLinklayer
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	start := time.Now()
	for sent := uint32(0); sent < frames; {
		n := min(frames-sent, rigSocketBatch)
		for i := range n {
			copy(bufs[i], frame)
			setRigFlow(bufs[i], load, r.socketSeq+i)
		}
		done, err := sendmmsg(fd, msgs[:n])
		if err != nil {
			return RigResult{}, fmt.Errorf("rig packet socket: send frame %d: %w", sent, err)
		}
		sent += done
		r.socketSeq += done
	}
	elapsed := time.Since(start)
	// veth hands a sent frame to its peer's NAPI, so the last ones come back
	// after Sendto returned: wait until all are counted or none arrive for a
	// while.
	var after uint64
	for last, idle := uint64(0), 0; idle < 50; idle++ {
		if after, err = r.returned(); err != nil {
			return RigResult{}, err
		}
		if after-before >= uint64(frames) {
			break
		}
		if after != last {
			last, idle = after, 0
		}
		time.Sleep(10 * time.Millisecond)
	}
	return RigResult{Sent: uint64(frames), Returned: after - before, Elapsed: elapsed}, nil
}

// sendmmsg sends msgs with one system call and returns how many went.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (uint32, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	runtime.KeepAlive(msgs)
	if errno != 0 {
		return 0, errno
	}
	return uint32(n), nil
}

func (r *Rig) returned() (uint64, error) {
	var per []struct{ Packets, Bytes uint64 }
	if err := r.count.RigCounts.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read rig counter: %w", err)
	}
	var n uint64
	for _, c := range per {
		n += c.Packets
	}
	return n, nil
}

// AttachRig attaches a program (xdp_swap from LoadSwap, or another under
// test) to ifname in the calling thread's namespace, through a bpf_link that
// Close removes.
func (p *Program) AttachRig(ifname string) (io.Closer, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", ifname, err)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: iface.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", ifname, err)
	}
	return l, nil
}

// RunStats returns the kernel's run-time statistics of the program: total
// run time and number of runs since it was loaded, counted while
// EnableRunStats is in effect.
func (p *Program) RunStats() (time.Duration, uint64, error) {
	st, err := p.prog.Stats()
	if err != nil {
		return 0, 0, fmt.Errorf("program stats: %w", err)
	}
	return st.Runtime, st.RunCount, nil
}

// EnableRunStats turns on the kernel's BPF run-time statistics until the
// returned closer is closed (they cost tens of ns per run: compare programs
// measured the same way only).
func EnableRunStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable bpf stats: %w", err)
	}
	return c, nil
}

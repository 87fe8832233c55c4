package loader

import (
	"runtime"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// tablePool recycles the inner maps that hold Maglev tables. A fresh
// 65537-slot inner map costs the kernel far more than rewriting an existing
// one (first-touch of 256 KiB of pages), so a table replaced by SetTable is
// kept and rewritten for a later install instead of being freed.
//
// A replaced map may still be read by packets that looked it up just before
// the swap, so it is "retired" first and becomes reusable only after an RCU
// grace period: XDP programs run inside RCU read-side sections, and
// membarrier(MEMBARRIER_CMD_GLOBAL) returns once one has passed on every CPU
// (the kernel implements it with synchronize_rcu). One wait frees every map
// retired before it, and the pool waits only once reuseBatch maps of a size
// are retired: a reconcile installing N tables waits about N/reuseBatch
// times and keeps at most maxPooled spare maps per table size. Where the
// guarantee is missing (a single CPU, where the kernel skips the wait, or
// nohz_full, where the command is refused), maps are never reused.
type tablePool struct {
	mu      sync.Mutex
	retired map[uint32][]*ebpf.Map // table size → replaced, maybe still read
	free    map[uint32][]*ebpf.Map // table size → safe to rewrite
	reuse   bool
}

// reuseBatch is how many retired maps of one size make a grace-period wait
// worth it; maxPooled bounds the maps kept per size.
const (
	reuseBatch = 32
	maxPooled  = 2 * reuseBatch
)

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL from linux/membarrier.h.
const membarrierCmdGlobal = 1

func newTablePool() *tablePool {
	return &tablePool{
		retired: map[uint32][]*ebpf.Map{},
		free:    map[uint32][]*ebpf.Map{},
		reuse:   runtime.NumCPU() > 1,
	}
}

// get returns a map safe to overwrite, or nil when the caller must create one.
func (p *tablePool) get(size uint32) *ebpf.Map {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free[size]) == 0 && len(p.retired[size]) >= reuseBatch {
		if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
			p.reuse = false
			p.closeAll(p.retired)
			return nil
		}
		for s, ms := range p.retired {
			p.free[s] = append(p.free[s], ms...)
			delete(p.retired, s)
		}
	}
	n := len(p.free[size])
	if n == 0 {
		return nil
	}
	m := p.free[size][n-1]
	p.free[size] = p.free[size][:n-1]
	return m
}

// put takes a map back: retired when packets may still read it, free when
// it was never installed.
func (p *tablePool) put(size uint32, m *ebpf.Map, retired bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.free
	if retired {
		list = p.retired
	}
	if !p.reuse || len(list[size]) >= maxPooled {
		m.Close()
		return
	}
	list[size] = append(list[size], m)
}

func (p *tablePool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeAll(p.retired)
	p.closeAll(p.free)
}

func (p *tablePool) closeAll(lists map[uint32][]*ebpf.Map) {
	for s, ms := range lists {
		for _, m := range ms {
			m.Close()
		}
		delete(lists, s)
	}
}

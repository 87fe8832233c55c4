package h1

// Parked connections hold no goroutine.
//
// A goroutine blocked in a read keeps its stack (a few KiB, more than
// everything else an idle connection holds). So a parked connection is
// registered with one epoll instance of the server's own instead
// (EPOLLIN|EPOLLRDHUP|EPOLLONESHOT; the descriptor stays owned by the
// net.Conn and registered with Go's netpoller too), and its goroutine
// returns. One goroutine waits on that epoll instance through Go's
// netpoller (the epoll descriptor is itself pollable), and starts a
// goroutine that resumes serving a connection when the kernel reports it
// readable, hung up or failed. The conn read that follows returns at once.
//
// Whoever takes a connection out of the parked set (the wait loop, the
// sweeper at its idle timeout, shutdown) owns it from then on: claim
// decides under one lock, so exactly one of them resumes or closes it.

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// parker is the server's epoll instance and its set of parked connections.
type parker struct {
	file *os.File // the epoll descriptor, for waiting through the netpoller
	epfd int

	mu     sync.Mutex
	closed bool
	conns  map[uint64]*conn // by the id in their epoll registration
	nextID uint64
}

// errParkerClosed: the server's parked set is gone; the connection ends.
var errParkerClosed = errors.New("parker closed")

func newParker() (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll instance: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("set epoll instance non-blocking: %w", err)
	}
	return &parker{file: os.NewFile(uintptr(epfd), "h1-parker"), epfd: epfd, conns: map[uint64]*conn{}}, nil
}

// add registers c, which has no buffers and no goroutine from now on
// unless add fails (the socket or the parker was closed). c.rc must be
// set.
func (p *parker) add(c *conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errParkerClosed
	}
	p.nextID++
	id := p.nextID
	c.parkID = id
	// In the set before the registration: an event may come at once.
	p.conns[id] = c
	op := unix.EPOLL_CTL_ADD
	if c.inEpoll {
		op = unix.EPOLL_CTL_MOD // registered before, disabled since (ONESHOT)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var ctlErr error
	// Control holds a reference on the socket: it cannot be closed (and
	// its number reused) while it is registered here.
	err := c.rc.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		delete(p.conns, id)
		return fmt.Errorf("register idle connection with epoll: %w", err)
	}
	c.inEpoll = true
	return nil
}

// claim takes c out of the parked set; false when it is not there (not
// parked yet, or claimed by someone else).
func (p *parker) claim(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.claimLocked(c)
}

// holdsLocked reports whether c is in the parked set.
func (p *parker) holdsLocked(c *conn) bool {
	return c.parkID != 0 && p.conns[c.parkID] == c
}

func (p *parker) claimLocked(c *conn) bool {
	if !p.holdsLocked(c) {
		return false
	}
	delete(p.conns, c.parkID)
	c.parkID = 0
	c.s.parked.Add(-1)
	return true
}

// claimExpired claims c if it is parked and its wait has a limit that is
// not after now (unix nanoseconds).
func (p *parker) claimExpired(c *conn, now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// c.limit is written before c joins the set and not again until it
	// is claimed: reading it under the lock, while c is in the set, is safe.
	if !p.holdsLocked(c) || c.limit.IsZero() || c.limit.UnixNano() > now {
		return false
	}
	return p.claimLocked(c)
}

// run waits for parked connections to become readable and resumes each in
// a new goroutine, until close.
func (p *parker) run() {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 128)
	var woken []*conn
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return true // the descriptor is closing
			}
			woken = woken[:0]
			p.mu.Lock()
			for _, ev := range events[:n] {
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if c := p.conns[id]; c != nil && p.claimLocked(c) {
					woken = append(woken, c)
				}
			}
			p.mu.Unlock()
			for _, c := range woken {
				go c.resume()
			}
			// Edge-triggered in the netpoller: wait only once nothing is
			// left to report.
			if n < len(events) {
				return false
			}
		}
	})
}

// close stops run and refuses further connections. Called once no
// connection is left to park.
func (p *parker) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.file.Close()
}

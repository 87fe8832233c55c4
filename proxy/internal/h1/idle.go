package h1

// Idle keep-alive connections give their buffers back.
//
// A connection between requests holds a read and a write buffer, the
// held-back body buffer and two header maps, about 11 KiB, for nothing.
// The sweeper wakes a connection that has been waiting for its next
// request for a whole livenessInterval (a read deadline in the past); the
// connection then returns those to pools and waits for readability on the
// socket itself (syscall.RawConn.Read, nothing read), taking them back
// when bytes arrive. Busy connections are never woken: between their
// requests they wait microseconds, and the sweeper looks once a second.

import (
	"bufio"
	"errors"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Values of conn.state.
const (
	connBusy   int32 = iota // reading or serving a request
	connIdle                // waiting for the next request, buffers held
	connWaking              // the sweeper set a past read deadline to park it
	connParked              // waiting for readability without buffers
)

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
	pends   = sync.Pool{New: func() any { b := make([]byte, 0, pendSize); return &b }}
)

// acquireBuffers gives the connection its buffers and header maps.
func (c *conn) acquireBuffers() {
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(c.nc)
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(c.nc)
	c.w.pend = (*pends.Get().(*[]byte))[:0]
	c.hdr = make(http.Header, 16)
	c.w.header = make(http.Header, 16)
}

// releaseBuffers lets go of them, into the pools when toPool (for the
// next connection), else for the collector (a parked connection's: a pool
// keeps what it holds through one more collection); the read buffer must
// be empty and the write buffer flushed.
func (c *conn) releaseBuffers(toPool bool) {
	if c.br == nil {
		return
	}
	if toPool {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.bw.Reset(nil)
		writers.Put(c.bw)
		pend := c.w.pend[:0]
		pends.Put(&pend)
	}
	c.br, c.bw, c.w.pend, c.hdr, c.w.header, c.vals = nil, nil, nil, nil, nil, nil
}

// wake asks an idle connection to park: a read deadline in the past ends
// its wait. Called by the sweeper.
func (c *conn) wake() {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	if c.state.CompareAndSwap(connIdle, connWaking) {
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// leaveIdle marks the connection busy. If the sweeper was waking it, the
// deadline it set is waited for and then no longer trusted.
func (c *conn) leaveIdle() {
	if c.state.Swap(connBusy) == connWaking {
		c.wakeMu.Lock()
		//lint:ignore SA2001 waits for the sweeper's SetReadDeadline
		c.wakeMu.Unlock()
		c.deadline = time.Unix(1, 0) // arm and fill set the real one again
	}
}

// errParked: the connection gave its buffers back; resume waits for it.
var errParked = errors.New("idle connection parked")

// park gives the buffers back.
func (c *conn) park() {
	c.wakeMu.Lock()
	c.state.Store(connParked)
	c.wakeMu.Unlock()
	c.releaseBuffers(false)
	c.s.parked.Add(1)
}

// resume runs in a new goroutine, so that what waits for a parked
// connection is a small stack, not the one that grew serving requests: it
// waits until the socket is readable (or closed, or the wait's limit
// passes), takes the buffers again and serves on.
func (c *conn) resume() {
	err := c.waitReadable()
	c.s.parked.Add(-1)
	if err != nil {
		c.end(false)
		return
	}
	c.acquireBuffers()
	c.state.Store(connIdle)
	c.run()
}

func (c *conn) waitReadable() error {
	for {
		c.deadline = c.limit
		if err := c.nc.SetReadDeadline(c.limit); err != nil {
			return err
		}
		err := c.rc.Read(c.readyFn)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || c.limit.IsZero() || !time.Now().Before(c.limit) {
			return err // closed, or the wait's limit passed
		}
	}
}

// ready is the RawConn.Read callback of park: true once the socket has
// something to read (bytes, end of stream or an error), false to wait.
func (c *conn) ready(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK
}

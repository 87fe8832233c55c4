package h1

// Idle keep-alive connections give their buffers back.
//
// A connection between requests holds a read and a write buffer, the
// held-back body buffer and its request state (a reused request, URL,
// response writer and two header maps), about 12 KiB, for nothing.
// The sweeper wakes a connection that has been waiting for its next
// request for a whole livenessInterval (a read deadline in the past); the
// connection then lets go of those and joins the server's parked set,
// where it holds no goroutine either (parker.go); it takes them back when
// bytes arrive. Busy connections are never woken: between their requests
// they wait microseconds, and the sweeper looks once a second, so the
// request path pays nothing for parking.

import (
	"bufio"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Values of conn.state.
const (
	connBusy   int32 = iota // reading or serving a request
	connIdle                // waiting for the next request, buffers held
	connWaking              // the sweeper set a past read deadline to park it
	connParked              // in the parked set: no buffers, no goroutine
)

// reqState is what a connection needs only while it reads or serves a
// request: taken with the buffers, let go of while parked.
type reqState struct {
	// req, its URL, header and header values are reused by every request
	// (a handler must not keep them once it returned); base holds the
	// connection's context.
	req  http.Request
	base http.Request
	url  url.URL
	hdr  http.Header
	vals []string
	w    writer
}

var (
	readers   = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writers   = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
	pends     = sync.Pool{New: func() any { b := make([]byte, 0, pendSize); return &b }}
	reqStates = sync.Pool{New: func() any {
		return &reqState{hdr: make(http.Header, 16), w: writer{header: make(http.Header, 16)}}
	}}
)

// acquireBuffers gives the connection its buffers and request state.
func (c *conn) acquireBuffers() {
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(c.nc)
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(c.nc)
	rs := reqStates.Get().(*reqState)
	rs.base = *(&http.Request{}).WithContext(c.ctx)
	rs.w.c = c
	rs.w.pend = (*pends.Get().(*[]byte))[:0]
	c.reqState = rs
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
		rs := c.reqState
		pend := rs.w.pend[:0]
		pends.Put(&pend)
		clear(rs.hdr)
		clear(rs.w.header)
		clear(rs.vals)
		*rs = reqState{hdr: rs.hdr, vals: rs.vals[:0], w: writer{header: rs.w.header}}
		reqStates.Put(rs)
	}
	c.br, c.bw, c.reqState = nil, nil, nil
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

// errParked: the connection gave its buffers back and joined the parked
// set (parker.go); its goroutine returns.
var errParked = errors.New("idle connection parked")

// park gives the buffers back and hands the connection to the parker. On
// errParked nothing of c may be touched any more: it may already be
// resumed or closed by another goroutine.
func (c *conn) park() error {
	c.wakeMu.Lock()
	c.state.Store(connParked)
	c.wakeMu.Unlock()
	c.releaseBuffers(false)
	if p, ok := c.nc.(parkNotified); ok {
		p.Parked()
	}
	c.s.parked.Add(1)
	if err := c.s.parker.add(c); err != nil {
		c.s.parked.Add(-1)
		c.state.Store(connBusy)
		return err // closed meanwhile: the caller ends the connection
	}
	return errParked
}

// parkNotified is a connection wrapper that lets go of its own
// per-request caches when the connection parks.
type parkNotified interface{ Parked() }

// resume runs in a new goroutine once the parker reported the socket
// readable (bytes, end of stream or an error): it takes the buffers again
// and serves on.
func (c *conn) resume() {
	c.acquireBuffers()
	// The sweeper set a deadline in the past to wake the connection.
	c.deadline = c.limit
	if err := c.nc.SetReadDeadline(c.limit); err != nil {
		c.end(false)
		return
	}
	c.state.Store(connIdle)
	c.run()
}

// closeParked closes a connection taken out of the parked set (idle
// timeout, shutdown) and forgets it.
func (c *conn) closeParked() {
	c.state.Store(connBusy)
	c.end(false)
}

package h1

// The lean HTTP/1.1 server of plain listeners (no TLS, no h2c).
//
// net/http's server costs a proxy more than its own work: per request it
// starts a background read of the client connection (one more read system
// call, a goroutine, two deadline changes), makes a cancellable context and
// allocates the request, its header and the response writer. The lean
// server reads a request head straight from the connection's buffer,
// fills a request and a response writer that belong to the connection, and
// writes the response head and body into the connection's write buffer,
// flushed once per response.
//
// It serves only the simplest requests, which are nearly all of them: an
// HTTP/1.1 request line with an origin-form target, one valid Host, header
// fields of visible ASCII, and no body (no Content-Length,
// Transfer-Encoding or Expect, no Upgrade). When a head is anything else —
// a body, an upgrade, HTTP/1.0, a malformed or unusual line, a head larger
// than its buffer or the listener's max_header_bytes — it does not judge
// it: it hands the connection, with the bytes it has read, over to a
// net/http server that serves it from then on exactly as before (errors,
// limits, bodies, WebSocket hijacking). So the lean parser never answers a
// malformed request itself; it only has to recognise the requests it may
// serve, and FuzzH1Parse checks that net/http reads those the same way.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// bufSize is the size of a connection's read and write buffers; a
	// request head must fit the read buffer to be served by the lean path.
	bufSize = 4 << 10
	// pendSize is how much of a response body without Content-Length is
	// held back to find its length, as net/http does, before the response
	// goes out chunked.
	pendSize = 2 << 10
	// livenessInterval is how often the sweeper looks whether the clients
	// of requests in flight are still there.
	livenessInterval = time.Second
)

// Server serves one plain HTTP/1.1 listener.
type Server struct {
	log     *slog.Logger
	handler http.Handler
	srv     *http.Server // takes over the connections handed off
	handoff *handoffListener
	ln      net.Listener
	base    context.Context
	maxHead int
	idle    time.Duration // wait for the next request; 0: none
	header  time.Duration // wait for the first request's head; 0: none

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing atomic.Bool
	done    chan struct{} // closed when Serve returned and the last connection ended
	wg      sync.WaitGroup
	date    atomic.Pointer[dateValue]
	// served counts requests served on the lean path, handedOff the
	// connections given to net/http.
	served    atomic.Uint64
	handedOff atomic.Uint64
	parked    atomic.Int64 // connections parked now (idle.go)
	// parker holds the parked connections; nil: connections never park
	// (no epoll instance could be made).
	parker *parker
	// parkedSince counts connections woken to park since memory was last
	// returned, at returnedAt (sweeper only).
	parkedSince int
	returnedAt  time.Time
	// epoch counts the sweeper's ticks (from 1): requests note it when they
	// begin, instead of reading the clock.
	epoch atomic.Int64
}

// NewServer returns the lean server of ln. srv is the net/http server that
// takes over the connections handed off; its Handler, timeouts,
// MaxHeaderBytes and ConnContext apply to the lean path too. base is the
// context of every request.
func NewServer(ln net.Listener, srv *http.Server, base context.Context, log *slog.Logger) *Server {
	maxHead := bufSize
	if srv.MaxHeaderBytes > 0 && srv.MaxHeaderBytes < maxHead {
		maxHead = srv.MaxHeaderBytes
	}
	s := &Server{
		log:     log,
		ln:      ln,
		handoff: newHandoffListener(ln.Addr()),
		handler: srv.Handler,
		srv:     srv,
		base:    base,
		maxHead: maxHead,
		idle:    srv.IdleTimeout,
		header:  srv.ReadHeaderTimeout,
		conns:   map[*conn]struct{}{},
		done:    make(chan struct{}),
	}
	s.epoch.Store(1)
	return s
}

// Serve accepts connections until the listener is closed, serving each on
// the lean path, and runs the net/http server for the connections handed
// off.
func (s *Server) Serve() error {
	ln := s.ln
	if pk, err := newParker(); err != nil {
		s.log.Warn("idle connections will keep their goroutines", "err", err)
	} else {
		s.parker = pk
		go pk.run()
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- s.srv.Serve(s.handoff) }()
	go s.sweep()
	defer func() {
		// The sweeper and the parker serve the connections still open.
		go func() {
			s.wg.Wait()
			if s.parker != nil {
				s.parker.close()
			}
			close(s.done)
		}()
		if err := <-srvDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server of handed-off connections stopped", "err", err)
		}
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if temporaryAccept(err) && !s.closing.Load() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			_ = s.handoff.Close()
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			return err
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			_ = nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// temporaryAccept reports whether an Accept error passes (too many open
// files, a connection aborted before it was accepted, ...), as net/http
// decides.
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Shutdown stops like http.Server.Shutdown: idle connections are closed at
// once, active ones after their current response; it waits for them, then
// shuts the net/http server of the handed-off connections down, until ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	_ = s.ln.Close()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.closeIdle() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	s.wg.Wait()
	// No lean connection is left to hand one off: stop net/http's part.
	return s.srv.Shutdown(ctx)
}

// closeIdle closes the connections waiting for a request and returns how
// many connections remain.
func (s *Server) closeIdle() int {
	return s.closeConns(func(c *conn) bool { return c.state.Load() != connBusy })
}

// Close closes every connection now.
func (s *Server) Close() error {
	s.closing.Store(true)
	_ = s.ln.Close()
	s.closeConns(func(*conn) bool { return true })
	return s.srv.Close()
}

// closeConns closes the connections for which match is true, ends those
// that were parked (no goroutine of theirs would), and returns how many
// connections remained before.
func (s *Server) closeConns(match func(*conn) bool) int {
	var parked []*conn
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		if !match(c) {
			continue
		}
		_ = c.nc.Close()
		// Read after the close: a connection that registered with the
		// parker did so before the close, so it shows as parked here.
		if c.state.Load() == connParked {
			parked = append(parked, c)
		}
	}
	s.mu.Unlock()
	for _, c := range parked {
		if s.parker.claim(c) {
			c.closeParked()
		}
	}
	return n
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// sweep looks every livenessInterval whether the clients of requests in
// flight for longer than that are still there (net/http's background read
// does that per request): a client that closed its connection cancels the
// request's context, so a slow backend exchange is given up. Connections
// idle for as long are woken to park (idle.go); parked ones whose wait
// has passed its limit (idle or header timeout) are closed, so those
// timeouts hold to within livenessInterval while parked.
func (s *Server) sweep() {
	t := time.NewTicker(livenessInterval)
	defer t.Stop()
	var list, idle, parked []*conn
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		epoch := s.epoch.Add(1)
		list, idle, parked = list[:0], idle[:0], parked[:0]
		s.mu.Lock()
		for c := range s.conns {
			// Begun before the previous tick: in flight for a whole interval.
			if st := c.started.Load(); st != 0 && st <= epoch-2 {
				list = append(list, c)
			}
			switch c.state.Load() {
			case connIdle:
				// Idle since before the previous tick: park it.
				if s.parker != nil && c.rc != nil && c.idleSince.Load() <= epoch-2 {
					idle = append(idle, c)
				}
			case connParked:
				parked = append(parked, c)
			}
		}
		s.mu.Unlock()
		now := time.Now().UnixNano()
		for _, c := range parked {
			if s.parker.claimExpired(c, now) {
				c.closeParked()
			}
		}
		for _, c := range list {
			if c.clientGone() {
				c.cancel()
			}
		}
		for _, c := range idle {
			c.wake()
		}
		s.returnMemory(len(idle))
	}
}

// returnMemory gives the memory of parked connections' buffers back to the
// system once enough of them parked since the last time (the runtime would
// keep it until a collection runs, and an idle proxy allocates nothing to
// start one): at most every returnInterval, when at least returnAfter
// connections parked.
func (s *Server) returnMemory(woken int) {
	s.parkedSince += woken
	if s.parkedSince < returnAfter || time.Since(s.returnedAt) < returnInterval {
		return
	}
	s.parkedSince = 0
	s.returnedAt = time.Now()
	// The connections woken now park in their own goroutines meanwhile.
	time.AfterFunc(livenessInterval/2, debug.FreeOSMemory)
}

const (
	returnAfter    = 1000 // connections, about 11 MiB of buffers
	returnInterval = 10 * time.Second
)

// Served is the number of requests served on the lean path.
func (s *Server) Served() uint64 { return s.served.Load() }

// Parked is the number of idle connections without buffers now.
func (s *Server) Parked() int64 { return s.parked.Load() }

// HandedOff is the number of connections handed to net/http.
func (s *Server) HandedOff() uint64 { return s.handedOff.Load() }

// dateValue is a formatted Date header value and the second it is for.
type dateValue struct {
	sec int64
	b   []byte
}

func (s *Server) dateFor(now time.Time) []byte {
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &dateValue{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	s.date.Store(d)
	return d.b
}

// conn is one client connection on the lean path.

package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

type conn struct {
	s      *Server
	nc     net.Conn
	rc     syscall.RawConn // nil: client liveness is not checked
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel context.CancelFunc
	remote string

	// *reqState is nil while the connection is parked (idle.go).
	*reqState

	// state is connBusy, or connIdle while waiting for a request with
	// nothing buffered (see idle.go for the others); idleSince is the
	// sweeper's epoch when that wait began.
	state     atomic.Int32
	idleSince atomic.Int64
	wakeMu    sync.Mutex // orders the sweeper's wake-up with leaving idle
	// parkID is the connection's id in the parked set (0: not in it) and
	// inEpoll whether its socket was ever registered with the parker's
	// epoll instance; both are guarded by the parker's lock.
	parkID  uint64
	inEpoll bool
	started atomic.Int64 // the sweeper's epoch when the request in flight began; 0: none
	// limit is when the wait for the next request ends (zero: never);
	// deadline the read deadline set on nc.
	limit    time.Time
	deadline time.Time
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	ctx := s.base
	if s.srv.ConnContext != nil {
		ctx = s.srv.ConnContext(ctx, nc)
	}
	c.rc = rawConn(nc)
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.acquireBuffers()
	return c
}

// rawConn finds the socket under nc's wrappers (NetConn methods), so the
// sweeper can peek at it and the parker register it without going through
// them; nil when there is none.
func rawConn(nc net.Conn) syscall.RawConn {
	for {
		if sc, ok := nc.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		}
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = w.NetConn()
	}
}

// errHandoff: the head is not one the lean path serves.
var errHandoff = errors.New("request for net/http")

func (c *conn) serve() {
	if c.s.header > 0 {
		c.limit = time.Now().Add(c.s.header)
	}
	c.run()
}

// run serves requests until the connection ends, is handed off, or parks
// (then no goroutine waits for it: see parker.go).
func (c *conn) run() {
	for {
		head, err := c.readHead()
		if err == errParked {
			return
		}
		if err == nil && !c.parse(head) {
			err = errHandoff
		}
		if err == errHandoff {
			c.handOff()
			c.end(true)
			return
		}
		if err != nil {
			c.end(false)
			return
		}
		_, _ = c.br.Discard(len(head))
		if !c.serveRequest() {
			c.end(false)
			return
		}
	}
}

// end forgets the connection, closing it unless it was handed off.
func (c *conn) end(handed bool) {
	c.s.remove(c)
	c.cancel()
	if !handed {
		_ = c.nc.Close()
	}
	c.releaseBuffers(true)
}

// readHead waits for a complete request head in the read buffer and
// returns it (still buffered): the first byte within the idle timeout (the
// header timeout for a new connection), the rest within the header
// timeout. A head that does not fit the buffer is handed off.
func (c *conn) readHead() ([]byte, error) {
	if c.br.Buffered() == 0 {
		c.idleSince.Store(c.s.epoch.Load())
		c.state.Store(connIdle)
		if c.s.closing.Load() {
			return nil, http.ErrServerClosed
		}
		// The next request rarely follows its answer at once; a read
		// now would find nothing and cost a system call before the
		// goroutine parks. The other ready connections run first.
		runtime.Gosched()
		err := c.fill(1)
		if err == errParked {
			return nil, err
		}
		c.leaveIdle()
		if err != nil {
			return nil, err
		}
	}
	for first := true; ; first = false {
		b, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(b, crlfcrlf); i >= 0 {
			if i+4 > c.s.maxHead {
				return nil, errHandoff
			}
			return b[:i+4], nil
		}
		if len(b) >= c.s.maxHead || len(b) >= bufSize {
			return nil, errHandoff
		}
		if first && c.s.header > 0 {
			if l := time.Now().Add(c.s.header); c.limit.IsZero() || l.Before(c.limit) {
				c.limit = l
			}
		}
		if err := c.fill(len(b) + 1); err != nil {
			return nil, err
		}
	}
}

// fill waits until n bytes are buffered or the current wait's limit passes.
func (c *conn) fill(n int) error {
	for {
		if err := c.arm(); err != nil {
			return err
		}
		_, err := c.br.Peek(n)
		if err == nil {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && n == 1 && c.state.Load() == connWaking {
			// The sweeper: idle long enough to give the buffers back.
			return c.park()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !c.limit.IsZero() && time.Now().Before(c.limit) {
			// A deadline set for an earlier wait.
			c.deadline = c.limit
			if err := c.nc.SetReadDeadline(c.limit); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// arm makes sure a read deadline no later than the end of the current wait
// is set. One set for an earlier wait is left alone (no timer change per
// request): when it fires early, fill moves it to the limit.
func (c *conn) arm() error {
	if c.limit.IsZero() {
		if c.deadline.IsZero() {
			return nil
		}
	} else if !c.deadline.IsZero() && !c.deadline.After(c.limit) {
		return nil // fires early, or has passed: fill sets the limit then
	}
	c.deadline = c.limit
	return c.nc.SetReadDeadline(c.limit)
}

// handOff gives the connection, with what it has buffered, to the
// net/http server.
func (c *conn) handOff() {
	var rest []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		rest = bytes.Clone(b)
	}
	// The net/http server sets its own deadlines.
	_ = c.nc.SetReadDeadline(time.Time{})
	hc := &handedConn{Conn: c.nc, rest: rest}
	c.s.handedOff.Add(1)
	if !c.s.handoff.give(hc) {
		_ = c.nc.Close()
	}
}

// clientGone reports whether the client closed its side or the connection
// failed, without reading anything (MSG_PEEK, non-blocking).
func (c *conn) clientGone() bool {
	if c.rc == nil {
		return false
	}
	gone := false
	_ = c.rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		gone = (errno == 0 && n == 0) || (errno != 0 && errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK && errno != syscall.EINTR)
	})
	return gone
}

// serveRequest runs the handler for the parsed request and finishes the
// response; false when the connection must be closed.
func (c *conn) serveRequest() (keep bool) {
	c.started.Store(c.s.epoch.Load())
	c.s.served.Add(1)
	w := &c.w
	w.reset(c.req.Method == http.MethodHead, c.req.Close || c.s.closing.Load())
	defer func() {
		c.started.Store(0)
		clear(c.hdr)
		c.req = http.Request{}
		if v := recover(); v != nil {
			keep = false
			if w.headerSent {
				_ = c.bw.Flush() // what was sent stays cut short
			}
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log.Error("panic serving request", "remote", c.remote, "err", fmt.Sprint(v), "stack", string(buf))
			}
		}
	}()
	c.s.handler.ServeHTTP(w, &c.req)
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter || c.ctx.Err() != nil {
		return false
	}
	if c.s.idle > 0 {
		c.limit = time.Now().Add(c.s.idle)
	} else {
		c.limit = time.Time{}
	}
	return true
}

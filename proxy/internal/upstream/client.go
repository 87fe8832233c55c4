// Package upstream is the proxy's HTTP/1.1 client towards backends:
// connections, their pools per backend address, and the wire format of
// requests sent and responses read.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/xlb-project/xlb/proxy/internal/wire"
)

// Client is the backend-side HTTP/1.1 client of plain (not upgraded)
// requests. Unlike net/http.Transport it runs in the request's goroutine:
// it takes a kept-alive connection from the backend's pool (or dials one),
// writes the request head and body, reads the response head and hands the
// body to the caller, which streams it and then releases the connection.
// There are no reader/writer goroutines and no channels per request.
//
// A connection goes back to the pool only when its response was read to the
// end, the request body was written in full, the backend did not ask to
// close it and nothing unread follows the response.
//
// An idle connection is reused for a replayable request (no body, an
// idempotent method) without probing it first, which would cost a system
// call per request: a pooled connection the backend closed while it was
// idle then shows up as a response that ends before its first byte, and
// the request is sent once more on a new connection, as net/http's
// Transport does. For other requests the connection is probed (a
// non-blocking MSG_PEEK sees the backend's FIN or reset) before it is
// reused. Either way, a pooled connection that fails before the request
// head went out is replaced by a new one. Nothing else is retried.
type Client struct {
	dialer     net.Dialer
	respHeader time.Duration // request sent to response head; 0: none
	idle       time.Duration // idle pooled connection lifetime; 0: none
	maxIdle    int           // idle connections kept per backend

	mu     sync.Mutex
	pools  map[string]*connPool
	closed bool
}

// Limits of a backend's response head.
const (
	maxResponseHead = 64 << 10
	clientReadBuf   = 16 << 10
	clientWriteBuf  = 4 << 10
	maxIdlePerHost  = 1024
	// continueWait bounds the wait for "100 Continue" before a request body
	// that announced Expect: 100-continue is sent anyway.
	continueWait = time.Second
)

// NewClient returns a client that dials with the connect timeout, waits up
// to respHeader for a response head (0: no limit) and keeps idle
// connections for idle (0: no limit).
func NewClient(connect, respHeader, idle time.Duration) *Client {
	return &Client{
		dialer:     net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second},
		respHeader: respHeader,
		idle:       idle,
		maxIdle:    maxIdlePerHost,
		pools:      map[string]*connPool{},
	}
}

// connPool holds the idle connections to one backend address, newest last.
type connPool struct {
	c     *Client
	addr  string
	mu    sync.Mutex
	idle  []*bconn
	sweep *time.Timer // set while idle connections wait to expire
}

// bconn is one connection to a backend.
type bconn struct {
	pool   *connPool
	nc     net.Conn
	rc     syscall.RawConn // nil: not peekable
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	hdr    http.Header // response header map, reused (values are not)
	resp   Response
	reused bool // taken from the pool
	// deadline is the read and write deadline set on nc; limit the one
	// the exchange must end by (zero: none); ctx the exchange's context.
	deadline time.Time
	limit    time.Time
	ctx      context.Context
	// peek state: alive is set by peekFn.
	alive  bool
	peekFn func(fd uintptr) bool // bc.peek, made once
}

func (c *Client) pool(addr string) *connPool {
	c.mu.Lock()
	p := c.pools[addr]
	if p == nil {
		p = &connPool{c: c, addr: addr}
		c.pools[addr] = p
	}
	c.mu.Unlock()
	return p
}

// CloseIdleConnections closes every idle connection; connections in use are
// closed when their exchange ends.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	c.closed = true
	pools := make([]*connPool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	c.mu.Unlock()
	for _, p := range pools {
		p.mu.Lock()
		idle := p.idle
		p.idle = nil
		if p.sweep != nil {
			p.sweep.Stop()
			p.sweep = nil
		}
		p.mu.Unlock()
		for _, bc := range idle {
			_ = bc.nc.Close()
		}
	}
}

// get returns the most recently used idle connection that has not expired
// (and, with probe, still looks open), or nil.
func (p *connPool) get(now time.Time, probe bool) *bconn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if (p.c.idle > 0 && now.Sub(bc.idleAt) >= p.c.idle) || bc.br.Buffered() > 0 || (probe && !bc.open()) {
			_ = bc.nc.Close()
			continue
		}
		bc.reused = true
		return bc
	}
}

// put returns bc to the pool, or closes it when the pool is full or closed.
func (p *connPool) put(bc *bconn, now time.Time) {
	bc.idleAt = now
	p.c.mu.Lock()
	closed := p.c.closed
	p.c.mu.Unlock()
	p.mu.Lock()
	if closed || len(p.idle) >= p.c.maxIdle {
		p.mu.Unlock()
		_ = bc.nc.Close()
		return
	}
	p.idle = append(p.idle, bc)
	if p.sweep == nil && p.c.idle > 0 {
		p.sweep = time.AfterFunc(p.c.idle, p.expire)
	}
	p.mu.Unlock()
}

// expire closes the connections idle longer than the idle timeout and
// schedules itself again while some remain.
func (p *connPool) expire() {
	now := time.Now()
	var dead []*bconn
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) >= p.c.idle {
		i++
	}
	if i > 0 {
		dead = append(dead, p.idle[:i]...)
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	if len(p.idle) > 0 {
		p.sweep = time.AfterFunc(p.c.idle-now.Sub(p.idle[0].idleAt), p.expire)
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, bc := range dead {
		_ = bc.nc.Close()
	}
}

// open reports whether an idle connection is still usable: nothing to read
// (no EOF, no reset, no stray bytes) without blocking.
func (bc *bconn) open() bool {
	if bc.rc == nil {
		return true
	}
	bc.alive = false
	if err := bc.rc.Read(bc.peekFn); err != nil {
		return false
	}
	return bc.alive
}

func (bc *bconn) peek(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	bc.alive = errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
	return true // never wait for readiness
}

func (c *Client) dial(ctx context.Context, p *connPool) (*bconn, error) {
	nc, err := c.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	bc := &bconn{
		pool: p,
		nc:   nc,
		hdr:  make(http.Header, 8),
	}
	bc.br = bufio.NewReaderSize(bc, clientReadBuf)
	bc.bw = bufio.NewWriterSize(bc, clientWriteBuf)
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			bc.rc = rc
			bc.peekFn = bc.peek
		}
	}
	return bc, nil
}

// Response is a response head read from a backend and the reader of
// its body.
type Response struct {
	Status   int
	Header   http.Header // owned by the connection; valid until Release
	Length   int64       // body length; -1: chunked or until close
	Trailers []string    // names announced in Trailer
	Body     Body
	bc       *bconn
	reuse    bool // the connection may be pooled once the body is read
}

// Errors of a backend exchange; all of them but ErrRequestBody become 502
// (or 504 when they are timeouts, which these are not).
var (
	errMalformed    = errors.New("malformed response from backend")
	errHeadTooLarge = errors.New("response head from backend too large")
	// errUnsent: a reused connection failed before the request went out.
	errUnsent = errors.New("pooled connection to backend was closed")
	// errNoResponse: the connection ended (EOF or reset) before the first
	// byte of a response.
	errNoResponse = errors.New("backend closed the connection before a response")
	// ErrRequestBody: reading the request body from the client failed
	// (malformed framing, too short, too slow, too large): the client's
	// fault, not the backend's. The error wraps the reader's.
	ErrRequestBody = errors.New("read request body from client")
)

// Do sends r to the backend at addr, with host as its Host and h as its
// header, and reads the response head, forwarding 1xx responses to w; now
// is the current time. The caller must call Release on the result.
func (c *Client) Do(ctx context.Context, w http.ResponseWriter, addr string, r *http.Request, host string, h http.Header, now time.Time) (*Response, error) {
	p := c.pool(addr)
	replay := replayable(r)
	bc := p.get(now, !replay)
	if bc == nil {
		var err error
		if bc, err = c.dial(ctx, p); err != nil {
			return nil, err
		}
	}
	resp, err := c.exchange(ctx, w, bc, r, host, h, now)
	if ctx.Err() == nil && (errors.Is(err, errUnsent) || (replay && bc.reused && errors.Is(err, errNoResponse))) {
		// A pooled connection closed by the backend while idle: one new
		// connection, same request.
		bc.close()
		if bc, err = c.dial(ctx, p); err != nil {
			return nil, err
		}
		resp, err = c.exchange(ctx, w, bc, r, host, h, now)
	}
	if err != nil {
		bc.close()
		return nil, err
	}
	return resp, nil
}

// replayable reports whether a request that may have reached the backend
// can be sent again: it has no body and its method is idempotent (or it
// carries an idempotency key), as net/http's Transport decides.
func replayable(r *http.Request) bool {
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// pollInterval is how often a wait on a backend looks whether the request's
// context ended (the client went away): instead of a callback registered
// on the context per request, reads and writes wake up this often.
const pollInterval = time.Second

// Read reads from the backend until limit, waking up every pollInterval to
// give up if the request's context ended.
func (bc *bconn) Read(p []byte) (int, error) {
	for {
		n, err := bc.nc.Read(p)
		if n > 0 || err == nil || !bc.wakeup(err) {
			return n, err
		}
	}
}

// Write writes to the backend like Read reads.
func (bc *bconn) Write(p []byte) (int, error) {
	total := 0
	for {
		n, err := bc.nc.Write(p[total:])
		total += n
		if err == nil || !bc.wakeup(err) {
			return total, err
		}
	}
}

// wakeup handles err from a read or write: true to try again (a poll
// deadline passed and the exchange goes on), false to fail with err.
func (bc *bconn) wakeup(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) || bc.ctx == nil || bc.ctx.Err() != nil {
		return false
	}
	now := time.Now()
	if !bc.limit.IsZero() && !now.Before(bc.limit) {
		return false
	}
	return bc.arm(now) == nil
}

// arm makes sure the connection's deadline lies ahead of now and not after
// the limit: set to the limit or the next poll, whichever comes first. A
// deadline already in that window is kept (no timer update per request).
func (bc *bconn) arm(now time.Time) error {
	d := bc.deadline
	if d.After(now) && (bc.limit.IsZero() || !d.After(bc.limit)) {
		return nil
	}
	d = now.Add(pollInterval)
	if !bc.limit.IsZero() && bc.limit.Before(d) {
		d = bc.limit
	}
	bc.deadline = d
	return bc.nc.SetDeadline(d)
}

// close closes the connection.
func (bc *bconn) close() {
	bc.ctx = nil
	_ = bc.nc.Close()
}

// ctxError turns a failure while the context ended into the context's
// error (a route timeout or the client going away).
func ctxError(ctx context.Context, err error) error {
	if ce := ctx.Err(); ce != nil && !errors.Is(err, ce) {
		return fmt.Errorf("%w: %w", ce, err)
	}
	return err
}

func (c *Client) exchange(ctx context.Context, w http.ResponseWriter, bc *bconn, r *http.Request, host string, h http.Header, now time.Time) (*Response, error) {
	resp, err := c.exchange1(ctx, w, bc, r, host, h, now)
	if err != nil {
		return nil, ctxError(ctx, err)
	}
	return resp, nil
}

func (c *Client) exchange1(ctx context.Context, w http.ResponseWriter, bc *bconn, r *http.Request, host string, h http.Header, now time.Time) (*Response, error) {
	// The head must arrive by limit: the response header timeout or the
	// route's deadline, whichever is first.
	var limit time.Time
	if c.respHeader > 0 {
		limit = now.Add(c.respHeader)
	}
	ctxLimit, _ := ctx.Deadline()
	if !ctxLimit.IsZero() && (limit.IsZero() || ctxLimit.Before(limit)) {
		limit = ctxLimit
	}
	bc.ctx, bc.limit = ctx, limit
	if err := bc.arm(now); err != nil {
		return nil, err
	}
	body := r.Body
	if r.ContentLength == 0 {
		body = nil
	}
	chunked := body != nil && r.ContentLength < 0
	expect := body != nil && hasExpectContinue(r.Header)
	writeHead(bc.bw, r, host, h, chunked, expect)
	if body == nil || expect {
		if err := bc.bw.Flush(); err != nil {
			bc.bw.Reset(bc)
			if bc.reused && !isTimeout(err) {
				return nil, fmt.Errorf("%w: %w", errUnsent, err)
			}
			return nil, err
		}
	}
	bodyDone := body == nil
	interim := false // an informational response was read
	if body != nil && !expect {
		if err := writeBody(bc.bw, body, chunked, r); err != nil {
			return nil, fmt.Errorf("send request body to backend: %w", err)
		}
		bodyDone = true
	}
	for {
		if expect && !bodyDone {
			// Wait a little for 100 Continue (or an early final answer).
			wait := time.Now().Add(continueWait)
			if limit.IsZero() || wait.Before(limit) {
				bc.limit = wait
				if err := bc.arm(time.Now()); err != nil {
					return nil, err
				}
			}
			_, err := bc.br.Peek(1)
			bc.limit = limit
			if err != nil && !isTimeout(err) {
				return nil, err
			} else if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := bc.arm(time.Now()); err != nil {
				return nil, err
			}
			if bc.br.Buffered() == 0 || isContinue(bc.br) {
				if err := writeBody(bc.bw, body, chunked, r); err != nil {
					return nil, fmt.Errorf("send request body to backend: %w", err)
				}
				bodyDone = true
			}
		}
		if bc.br.Buffered() == 0 {
			// The answer is rarely there the moment the request is
			// sent; a read now would find nothing and cost a system
			// call before parking. Letting the other ready requests
			// run first gives the backend that time.
			runtime.Gosched()
		}
		resp, err := readHead(bc, r.Method)
		if err != nil {
			if interim && errors.Is(err, errNoResponse) {
				// Part of the response (an informational one) came: no retry.
				err = fmt.Errorf("backend closed the connection after an informational response: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if resp.Status >= 100 && resp.Status < 200 {
			interim = true
			if resp.Status == http.StatusSwitchingProtocols {
				return nil, fmt.Errorf("%w: 101 to a request that did not upgrade", errMalformed)
			}
			if resp.Status != http.StatusContinue {
				forward1xx(w, resp)
			} else if !bodyDone {
				if err := writeBody(bc.bw, body, chunked, r); err != nil {
					return nil, fmt.Errorf("send request body to backend: %w", err)
				}
				bodyDone = true
			}
			continue
		}
		if !bodyDone {
			resp.reuse = false // the backend answered without the body
		}
		// The body may take longer than the head: only the route's own
		// deadline bounds it. A poll deadline already set stays.
		bc.limit = ctxLimit
		return resp, nil
	}
}

func hasExpectContinue(h http.Header) bool {
	return wire.TokenListHas(h["Expect"], "100-continue")
}

// isContinue reports whether the buffered response starts with a 100 status.
func isContinue(br *bufio.Reader) bool {
	b, _ := br.Peek(12)
	return len(b) == 12 && string(b[:7]) == "HTTP/1." && string(b[8:12]) == " 100"
}

// forward1xx sends an informational response to the client with its
// headers, which are then removed again from the final response's header.
func forward1xx(w http.ResponseWriter, resp *Response) {
	dst := w.Header()
	var added []string
	for k, vv := range resp.Header {
		if wire.IsHopHeader(k) {
			continue
		}
		if _, ok := dst[k]; !ok {
			added = append(added, k)
			dst[k] = vv
		}
	}
	w.WriteHeader(resp.Status)
	for _, k := range added {
		delete(dst, k)
	}
}

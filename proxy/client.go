package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// client is the backend-side HTTP/1.1 client of plain (not upgraded)
// requests. Unlike net/http.Transport it runs in the request's goroutine:
// it takes a kept-alive connection from the backend's pool (or dials one),
// writes the request head and body, reads the response head and hands the
// body to the caller, which streams it and then releases the connection.
// There are no reader/writer goroutines and no channels per request.
//
// A connection goes back to the pool only when its response was read to the
// end, the request body was written in full, the backend did not ask to
// close it and nothing unread follows the response. Nothing is retried,
// except that a pooled connection the backend closed while it was idle
// (seen before a byte of the request is written) is replaced by a new one.
type client struct {
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

func newClient(t TimeoutConfig) *client {
	return &client{
		dialer:     net.Dialer{Timeout: t.Connect.D(), KeepAlive: 30 * time.Second},
		respHeader: t.ResponseHeader.D(),
		idle:       t.Idle.D(),
		maxIdle:    maxIdlePerHost,
		pools:      map[string]*connPool{},
	}
}

// connPool holds the idle connections to one backend address, newest last.
type connPool struct {
	c     *client
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
	resp   backendResponse
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

func (c *client) pool(addr string) *connPool {
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
func (c *client) CloseIdleConnections() {
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

// get returns an idle connection that still looks open, or nil.
func (p *connPool) get(now time.Time) *bconn {
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
		if (p.c.idle > 0 && now.Sub(bc.idleAt) >= p.c.idle) || !bc.open() {
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
	if bc.br.Buffered() > 0 {
		return false
	}
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

func (c *client) dial(ctx context.Context, p *connPool) (*bconn, error) {
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

// backendResponse is a response head read from a backend and the reader of
// its body.
type backendResponse struct {
	status   int
	header   http.Header // owned by the connection; valid until release
	length   int64       // body length; -1: chunked or until close
	trailers []string    // names announced in Trailer
	body     bodyReader
	bc       *bconn
	reuse    bool // the connection may be pooled once the body is read
}

// Errors of a backend exchange; all of them become 502 (or 504 when they
// are timeouts, which these are not).
var (
	errMalformed    = errors.New("malformed response from backend")
	errHeadTooLarge = errors.New("response head from backend too large")
	// errUnsent: a reused connection failed before the request went out.
	errUnsent = errors.New("pooled connection to backend was closed")
)

// do sends out to a backend and reads the response head, forwarding 1xx
// responses to w. The caller must call release on the result.
func (c *client) do(ctx context.Context, w http.ResponseWriter, addr string, r *http.Request, host string, h http.Header) (*backendResponse, error) {
	p := c.pool(addr)
	now := time.Now()
	bc := p.get(now)
	if bc == nil {
		var err error
		if bc, err = c.dial(ctx, p); err != nil {
			return nil, err
		}
	}
	resp, err := c.exchange(ctx, w, bc, r, host, h, now)
	if errors.Is(err, errUnsent) && ctx.Err() == nil {
		// A pooled connection closed by the backend while idle, found when
		// the head would not go out: one new connection, same request.
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

func (c *client) exchange(ctx context.Context, w http.ResponseWriter, bc *bconn, r *http.Request, host string, h http.Header, now time.Time) (*backendResponse, error) {
	resp, err := c.exchange1(ctx, w, bc, r, host, h, now)
	if err != nil {
		return nil, ctxError(ctx, err)
	}
	return resp, nil
}

func (c *client) exchange1(ctx context.Context, w http.ResponseWriter, bc *bconn, r *http.Request, host string, h http.Header, now time.Time) (*backendResponse, error) {
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
		resp, err := readHead(bc, r.Method)
		if err != nil {
			return nil, err
		}
		if resp.status >= 100 && resp.status < 200 {
			if resp.status == http.StatusSwitchingProtocols {
				return nil, fmt.Errorf("%w: 101 to a request that did not upgrade", errMalformed)
			}
			if resp.status != http.StatusContinue {
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
	return tokenListHas(h["Expect"], "100-continue")
}

// isContinue reports whether the buffered response starts with a 100 status.
func isContinue(br *bufio.Reader) bool {
	b, _ := br.Peek(12)
	return len(b) == 12 && string(b[:7]) == "HTTP/1." && string(b[8:12]) == " 100"
}

// forward1xx sends an informational response to the client with its
// headers, which are then removed again from the final response's header.
func forward1xx(w http.ResponseWriter, resp *backendResponse) {
	dst := w.Header()
	var added []string
	for k, vv := range resp.header {
		if isHopHeader(k) {
			continue
		}
		if _, ok := dst[k]; !ok {
			added = append(added, k)
			dst[k] = vv
		}
	}
	w.WriteHeader(resp.status)
	for _, k := range added {
		delete(dst, k)
	}
}

// writeHead writes the request line and header of an outgoing request.
func writeHead(bw *bufio.Writer, r *http.Request, host string, h http.Header, chunked, expect bool) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	if r.URL.Opaque != "" {
		bw.WriteString(r.URL.Opaque)
	} else {
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/"
		}
		bw.WriteString(p)
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	writeValue(bw, host)
	bw.WriteString("\r\n")
	for k, vv := range h {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Expect":
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			writeValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case chunked:
		if len(r.Trailer) > 0 {
			bw.WriteString("Trailer: ")
			first := true
			for k := range r.Trailer {
				if !first {
					bw.WriteString(", ")
				}
				first = false
				bw.WriteString(k)
			}
			bw.WriteString("\r\n")
		}
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		var nb [20]byte
		bw.Write(strconv.AppendInt(nb[:0], r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if expect {
		bw.WriteString("Expect: 100-continue\r\n")
	}
	bw.WriteString("\r\n")
}

// writeValue writes a header value with any CR or LF (which net/http
// rejects on the way in, but a header op could hold) replaced by a space.
func writeValue(bw *bufio.Writer, v string) {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			b := []byte(v)
			for j := i; j < len(b); j++ {
				if b[j] == '\r' || b[j] == '\n' {
					b[j] = ' '
				}
			}
			bw.Write(b)
			return
		}
	}
	bw.WriteString(v)
}

// writeBody streams a request body to the backend (chunked when its length
// is unknown, with the client's trailers) and flushes.
func writeBody(bw *bufio.Writer, body io.Reader, chunked bool, r *http.Request) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if chunked {
				var nb [20]byte
				bw.Write(strconv.AppendUint(nb[:0], uint64(n), 16))
				bw.WriteString("\r\n")
			}
			if _, err := bw.Write(buf[:n]); err != nil {
				return err
			}
			if chunked {
				bw.WriteString("\r\n")
			}
			if rerr == nil {
				// Stream: what the client sent so far goes out now.
				if err := bw.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read request body: %w", rerr)
		}
	}
	if !chunked && total != r.ContentLength {
		return fmt.Errorf("request body has %d bytes, Content-Length said %d", total, r.ContentLength)
	}
	if chunked {
		bw.WriteString("0\r\n")
		for k, vv := range r.Trailer {
			for _, v := range vv {
				bw.WriteString(k)
				bw.WriteString(": ")
				writeValue(bw, v)
				bw.WriteString("\r\n")
			}
		}
		bw.WriteString("\r\n")
	}
	return bw.Flush()
}

// readHead reads and checks a response head: status line, header fields,
// and the framing of the body that follows.
func readHead(bc *bconn, method string) (*backendResponse, error) {
	br := bc.br
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, errHeadTooLarge
		}
		if err == io.EOF {
			return nil, fmt.Errorf("backend closed the connection before a response: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	size := len(line)
	status, http10, err := parseStatusLine(line)
	if err != nil {
		return nil, err
	}
	h := bc.hdr
	clear(h)
	resp := &bc.resp
	*resp = backendResponse{status: status, header: h, length: -1, bc: bc, reuse: !http10}
	if err := readFields(br, h, size); err != nil {
		return nil, err
	}
	if c := h["Connection"]; len(c) > 0 {
		if tokenListHas(c, "close") {
			resp.reuse = false
		} else if http10 && tokenListHas(c, "keep-alive") {
			resp.reuse = true
		}
	}
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	if hasTE && hasCL {
		return nil, fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errMalformed)
	}
	var length int64 = -1
	if hasCL {
		n, ok := parseContentLength(cl)
		if !ok {
			return nil, fmt.Errorf("%w: Content-Length %q", errMalformed, cl)
		}
		length = n
	}
	if hasTE && (len(te) != 1 || !equalFoldASCII(te[0], "chunked") || http10) {
		return nil, fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, te)
	}
	switch {
	case method == http.MethodHead || status < 200 || status == http.StatusNoContent || status == http.StatusNotModified:
		resp.body.init(br, 0, false) // no body, whatever the header says
		resp.length = 0
	case hasTE:
		resp.body.init(br, -1, true)
	case hasCL:
		resp.length = length
		resp.body.init(br, length, false)
	default:
		resp.body.init(br, -1, false) // until the backend closes
		resp.reuse = false
	}
	if t := h["Trailer"]; len(t) > 0 && resp.body.chunked {
		for _, v := range t {
			for v != "" {
				var name string
				name, v, _ = cutComma(v)
				if name != "" {
					resp.trailers = append(resp.trailers, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	return resp, nil
}

func cutComma(v string) (tok, rest string, found bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			return trimOWS(v[:i]), v[i+1:], true
		}
	}
	return trimOWS(v), "", false
}

// parseStatusLine accepts "HTTP/1.x NNN[ reason]\r\n".
func parseStatusLine(line []byte) (status int, http10 bool, err error) {
	line = trimEOL(line)
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, false, fmt.Errorf("%w: status %d", errMalformed, status)
	}
	for _, c := range line[12:] {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
		}
	}
	return status, line[7] == '0', nil
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func trimEOL(line []byte) []byte {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
		if n > 0 && line[n-1] == '\r' {
			n--
		}
	}
	return line[:n]
}

// readFields reads header fields up to the empty line into h. size is what
// the head used so far. Field values share one string per head and the
// value slices one backing array.
func readFields(br *bufio.Reader, h http.Header, size int) error {
	// Gather the lines (one may not fit the reader's buffer) without their
	// line ends, then make one string of them.
	var stack [2048]byte
	raw := stack[:0]
	n := 0
	for {
		start := len(raw)
		for {
			line, err := br.ReadSlice('\n')
			size += len(line)
			if size > maxResponseHead {
				return errHeadTooLarge
			}
			raw = append(raw, line...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return fmt.Errorf("read response head from backend: %w", eofUnexpected(err))
			}
		}
		l := trimEOL(raw[start:])
		if len(l) == 0 {
			raw = raw[:start]
			break
		}
		raw = append(raw[:start+len(l)], '\n')
		n++
	}
	if n == 0 {
		return nil
	}
	s := string(raw)
	vals := make([]string, n)
	for i := 0; s != ""; i++ {
		j := 0
		for j < len(s) && s[j] != '\n' {
			j++
		}
		f := s[:j]
		s = s[j+1:]
		if f[0] == ' ' || f[0] == '\t' {
			return fmt.Errorf("%w: obsolete line folding", errMalformed)
		}
		colon := -1
		for k := 0; k < len(f); k++ {
			if f[k] == ':' {
				colon = k
				break
			}
			if !isTokenChar(f[k]) {
				return fmt.Errorf("%w: header field name %q", errMalformed, clipS(f))
			}
		}
		if colon <= 0 {
			return fmt.Errorf("%w: header line %q", errMalformed, clipS(f))
		}
		v := trimOWS(f[colon+1:])
		for k := 0; k < len(v); k++ {
			if c := v[k]; (c < ' ' && c != '\t') || c == 0x7f {
				return fmt.Errorf("%w: header %s value", errMalformed, clipS(f[:colon]))
			}
		}
		key := canonicalKey(f[:colon])
		vals[i] = v
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = vals[i : i+1 : i+1]
		}
	}
	return nil
}

func clipS(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// commonKeys are canonical header names returned without allocating.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Age", "Cache-Control", "Connection", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy",
		"Content-Type", "Date", "Etag", "Expires", "Keep-Alive", "Last-Modified", "Link", "Location",
		"Server", "Set-Cookie", "Strict-Transport-Security", "Trailer", "Transfer-Encoding", "Vary",
		"Www-Authenticate", "X-Content-Type-Options", "X-Frame-Options", "X-Request-Id", "Retry-After",
		"Access-Control-Allow-Origin", "Alt-Svc", "Proxy-Authenticate", "Upgrade",
	} {
		m[k] = k
	}
	return m
}()

// canonicalKey is http.CanonicalHeaderKey of a valid token, without
// allocating for names already canonical and common.
func canonicalKey(s string) string {
	if k, ok := commonKeys[s]; ok {
		return k
	}
	return http.CanonicalHeaderKey(s)
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// parseContentLength accepts one or more identical decimal values.
func parseContentLength(vv []string) (int64, bool) {
	var n int64 = -1
	for _, v := range vv {
		for v != "" {
			var t string
			t, v, _ = cutComma(v)
			if t == "" || len(t) > 18 {
				return 0, false
			}
			var x int64
			for i := 0; i < len(t); i++ {
				if t[i] < '0' || t[i] > '9' {
					return 0, false
				}
				x = x*10 + int64(t[i]-'0')
			}
			if n >= 0 && x != n {
				return 0, false
			}
			n = x
		}
	}
	return n, n >= 0
}

// release ends the exchange: the connection goes back to the pool when the
// body was read to its end and nothing prevents reuse, else it is closed.
func (resp *backendResponse) release() {
	bc := resp.bc
	bc.ctx = nil
	if resp.reuse && resp.body.done && bc.br.Buffered() == 0 {
		// Deadlines are set again by the next exchange.
		bc.pool.put(bc, time.Now())
		return
	}
	_ = bc.nc.Close()
}

// bodyReader reads a response body framed by Content-Length, chunked
// encoding (its trailer fields go to trailer) or the end of the connection.
type bodyReader struct {
	br      *bufio.Reader
	left    int64 // Content-Length bytes left, or bytes left in the chunk
	chunked bool
	close   bool // until the connection closes
	done    bool // read to the end
	trailer http.Header
	err     error
}

func (b *bodyReader) init(br *bufio.Reader, n int64, chunked bool) {
	*b = bodyReader{br: br, left: n, chunked: chunked, close: n < 0 && !chunked}
	if chunked {
		b.left = 0
	}
	if n == 0 && !chunked {
		b.done = true
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return 0, io.EOF
	}
	switch {
	case b.close:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true
		}
		return n, err
	case !b.chunked:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.done = true
			return n, nil
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			b.err = err
		}
		return n, err
	}
	if b.left == 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
		return n, err
	}
	if b.left == 0 {
		if err := b.chunkEnd(); err != nil {
			b.err = err
			return n, nil // the error comes with the next Read
		}
	}
	return n, nil
}

// chunkEnd consumes the CRLF after a chunk's data.
func (b *bodyReader) chunkEnd() error {
	c, err := b.br.ReadByte()
	if err == nil && c == '\r' {
		c, err = b.br.ReadByte()
	}
	if err != nil {
		return eofUnexpected(err)
	}
	if c != '\n' {
		return fmt.Errorf("%w: chunk not followed by CRLF", errMalformed)
	}
	return nil
}

func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// nextChunk reads a chunk-size line; at the last chunk it reads the trailer
// section and marks the body done.
func (b *bodyReader) nextChunk() error {
	line, err := b.br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("%w: chunk size line too long", errMalformed)
		}
		return eofUnexpected(err)
	}
	line = trimEOL(line)
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto end
		}
		if i >= 15 {
			return fmt.Errorf("%w: chunk size too large", errMalformed)
		}
		n = n<<4 | int64(d)
	}
end:
	if i == 0 {
		return fmt.Errorf("%w: chunk size %q", errMalformed, clip(line))
	}
	if rest := line[i:]; len(rest) > 0 && rest[0] != ';' && rest[0] != ' ' && rest[0] != '\t' {
		return fmt.Errorf("%w: chunk size %q", errMalformed, clip(line))
	}
	if n > 0 {
		b.left = n
		return nil
	}
	// Last chunk: trailer fields, then the empty line.
	b.trailer = make(http.Header)
	if err := readFields(b.br, b.trailer, 0); err != nil {
		return err
	}
	b.done = true
	return nil
}

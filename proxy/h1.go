package proxy

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
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	// h1BufSize is the size of a connection's read and write buffers; a
	// request head must fit the read buffer to be served by the lean path.
	h1BufSize = 4 << 10
	// h1PendSize is how much of a response body without Content-Length is
	// held back to find its length, as net/http does, before the response
	// goes out chunked.
	h1PendSize = 2 << 10
)

// h1Server serves one plain HTTP/1.1 listener.
type h1Server struct {
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
	conns   map[*h1Conn]struct{}
	closing atomic.Bool
	done    chan struct{} // closed when serve returns
	wg      sync.WaitGroup
	date    atomic.Pointer[dateValue]
	// served counts requests served on the lean path, handedOff the
	// connections given to net/http.
	served    atomic.Uint64
	handedOff atomic.Uint64
	// epoch counts the sweeper's ticks (from 1): requests note it when they
	// begin, instead of reading the clock.
	epoch atomic.Int64
}

func newH1Server(ln net.Listener, srv *http.Server, base context.Context, log *slog.Logger) *h1Server {
	maxHead := h1BufSize
	if srv.MaxHeaderBytes > 0 && srv.MaxHeaderBytes < maxHead {
		maxHead = srv.MaxHeaderBytes
	}
	s := &h1Server{
		log:     log,
		ln:      ln,
		handoff: newHandoffListener(ln.Addr()),
		handler: srv.Handler,
		srv:     srv,
		base:    base,
		maxHead: maxHead,
		idle:    srv.IdleTimeout,
		header:  srv.ReadHeaderTimeout,
		conns:   map[*h1Conn]struct{}{},
		done:    make(chan struct{}),
	}
	s.epoch.Store(1)
	return s
}

// serve accepts connections until the listener is closed, serving each on
// the lean path, and runs the net/http server for the connections handed
// off.
func (s *h1Server) serve() error {
	ln := s.ln
	srvDone := make(chan error, 1)
	go func() { srvDone <- s.srv.Serve(s.handoff) }()
	go s.sweep()
	defer func() {
		close(s.done)
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
		c := newH1Conn(s, nc)
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

// shutdown stops like http.Server.Shutdown: idle connections are closed at
// once, active ones after their current response; it waits for them, then
// shuts the net/http server of the handed-off connections down, until ctx
// ends.
func (s *h1Server) shutdown(ctx context.Context) error {
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
func (s *h1Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			_ = c.nc.Close()
		}
	}
	return len(s.conns)
}

// close closes every connection now.
func (s *h1Server) close() error {
	s.closing.Store(true)
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
	s.mu.Unlock()
	return s.srv.Close()
}

func (s *h1Server) remove(c *h1Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// sweep looks every pollInterval whether the clients of requests in flight
// for longer than that are still there (net/http's background read does
// that per request): a client that closed its connection cancels the
// request's context, so a slow backend exchange is given up.
func (s *h1Server) sweep() {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var list []*h1Conn
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		epoch := s.epoch.Add(1)
		list = list[:0]
		s.mu.Lock()
		for c := range s.conns {
			// Begun before the previous tick: in flight for a whole interval.
			if st := c.started.Load(); st != 0 && st <= epoch-2 {
				list = append(list, c)
			}
		}
		s.mu.Unlock()
		for _, c := range list {
			if c.clientGone() {
				c.cancel()
			}
		}
	}
}

// dateValue is a formatted Date header value and the second it is for.
type dateValue struct {
	sec int64
	b   []byte
}

func (s *h1Server) dateFor(now time.Time) []byte {
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &dateValue{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	s.date.Store(d)
	return d.b
}

// h1Conn is one client connection on the lean path.
type h1Conn struct {
	s      *h1Server
	nc     net.Conn
	rc     syscall.RawConn // nil: client liveness is not checked
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel context.CancelFunc
	remote string

	// req, its URL, header and header values are reused by every request
	// (a handler must not keep them once it returned); base holds the
	// connection's context.
	req  http.Request
	base http.Request
	url  url.URL
	hdr  http.Header
	vals []string
	w    h1Writer

	idle    atomic.Bool  // waiting for a request with nothing buffered
	started atomic.Int64 // the sweeper's epoch when the request in flight began; 0: none
	// limit is when the wait for the next request ends (zero: never);
	// deadline the read deadline set on nc.
	limit    time.Time
	deadline time.Time
}

func newH1Conn(s *h1Server, nc net.Conn) *h1Conn {
	c := &h1Conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), hdr: make(http.Header, 16)}
	c.br = bufio.NewReaderSize(nc, h1BufSize)
	c.bw = bufio.NewWriterSize(nc, h1BufSize)
	ctx := s.base
	if tc := unwrapConn(nc); tc != nil {
		ctx = context.WithValue(ctx, connKey{}, tc)
		if sc, ok := tc.Conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.rc = rc
			}
		}
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.base = *(&http.Request{}).WithContext(c.ctx)
	c.w.c = c
	c.w.header = make(http.Header, 16)
	c.w.pend = make([]byte, 0, h1PendSize)
	return c
}

// errHandoff: the head is not one the lean path serves.
var errHandoff = errors.New("request for net/http")

func (c *h1Conn) serve() {
	handed := false
	defer func() {
		c.s.remove(c)
		c.cancel()
		if !handed {
			_ = c.nc.Close()
		}
	}()
	if c.s.header > 0 {
		c.limit = time.Now().Add(c.s.header)
	}
	for {
		head, err := c.readHead()
		if err == nil && !c.parse(head) {
			err = errHandoff
		}
		if err == errHandoff {
			handed = true
			c.handOff()
			return
		}
		if err != nil {
			return
		}
		_, _ = c.br.Discard(len(head))
		if !c.serveRequest() {
			return
		}
	}
}

// readHead waits for a complete request head in the read buffer and
// returns it (still buffered): the first byte within the idle timeout (the
// header timeout for a new connection), the rest within the header
// timeout. A head that does not fit the buffer is handed off.
func (c *h1Conn) readHead() ([]byte, error) {
	if c.br.Buffered() == 0 {
		c.idle.Store(true)
		if c.s.closing.Load() {
			return nil, http.ErrServerClosed
		}
		if err := c.fill(1); err != nil {
			return nil, err
		}
		c.idle.Store(false)
	}
	for first := true; ; first = false {
		b, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(b, crlfcrlf); i >= 0 {
			if i+4 > c.s.maxHead {
				return nil, errHandoff
			}
			return b[:i+4], nil
		}
		if len(b) >= c.s.maxHead || len(b) >= h1BufSize {
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
func (c *h1Conn) fill(n int) error {
	for {
		if err := c.arm(); err != nil {
			return err
		}
		_, err := c.br.Peek(n)
		if err == nil {
			return nil
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
func (c *h1Conn) arm() error {
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
func (c *h1Conn) handOff() {
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
func (c *h1Conn) clientGone() bool {
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
func (c *h1Conn) serveRequest() (keep bool) {
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

// parse fills c.req from a request head; false when the head is not one
// the lean path serves (see the top of this file).
func (c *h1Conn) parse(head []byte) bool {
	// Only CRLF line ends, no other control characters but tab.
	for i, b := range head {
		switch {
		case b == '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
		case b == '\n':
			if i == 0 || head[i-1] != '\r' {
				return false
			}
		case b == '\t', b >= ' ' && b < 0x7f:
		default:
			return false
		}
	}
	str := string(head) // one string per head; values share it
	line, rest, _ := cutCRLF(str)
	sp := 0
	for sp < len(line) && isTokenChar(line[sp]) {
		sp++
	}
	if sp == 0 || sp >= len(line) || line[sp] != ' ' {
		return false
	}
	method := line[:sp]
	line = line[sp+1:]
	sp = 0
	for sp < len(line) && line[sp] != ' ' && line[sp] != '\t' && line[sp] != '#' {
		sp++
	}
	target := line[:sp]
	if len(target) == 0 || target[0] != '/' || line[sp:] != " HTTP/1.1" {
		return false
	}
	u := &c.url
	if !simpleTarget(target, u) {
		var err error
		if u, err = url.ParseRequestURI(target); err != nil {
			return false
		}
	}
	h := c.hdr
	n := 0
	for r := rest; r != "\r\n"; {
		_, r, _ = cutCRLF(r)
		n++
	}
	if cap(c.vals) < n {
		c.vals = make([]string, n)
	}
	vals := c.vals[:n]
	host, hosts := "", 0
	for i := 0; rest != "\r\n"; i++ {
		var f string
		f, rest, _ = cutCRLF(rest)
		if f[0] == ' ' || f[0] == '\t' {
			return false // obsolete line folding
		}
		colon := 0
		for colon < len(f) && isTokenChar(f[colon]) {
			colon++
		}
		if colon == 0 || colon >= len(f) || f[colon] != ':' {
			return false
		}
		key := canonicalRequestKey(f[:colon])
		v := trimOWS(f[colon+1:])
		switch key {
		case "Host":
			host = v
			hosts++
			continue
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings":
			return false
		}
		vals[i] = v
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = vals[i : i+1 : i+1]
		}
	}
	if hosts != 1 || !simpleHost(host) {
		return false
	}
	if pv := h["Pragma"]; len(pv) > 0 && pv[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = noCache[:1:1]
		}
	}
	c.req = c.base
	r := &c.req
	r.Method = method
	r.URL = u
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h
	r.Body = http.NoBody
	r.Host = host
	r.RequestURI = target
	r.RemoteAddr = c.remote
	r.Close = tokenListHas(h["Connection"], "close")
	return true
}

var noCache = []string{"no-cache"}

// simpleTarget sets u to what url.ParseRequestURI makes of an origin-form
// target whose path holds only characters that need no escaping (letters,
// digits, "-._~$&+,/:;=@"), and reports whether it was one.
func simpleTarget(target string, u *url.URL) bool {
	path, query, hasQuery := target, "", false
	for i := 0; i < len(target); i++ {
		c := target[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			continue
		}
		switch c {
		case '-', '.', '_', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
			continue
		case '?':
			path, query, hasQuery = target[:i], target[i+1:], true
		default:
			return false
		}
		break
	}
	if len(path) > 1 && path[1] == '/' {
		return false // "//...": left to net/url
	}
	*u = url.URL{Path: path, RawQuery: query}
	u.ForceQuery = hasQuery && query == "" // "/a?" (the only '?' is last)
	return true
}

func cutCRLF(s string) (line, rest string, ok bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '\r' && s[i+1] == '\n' {
			return s[:i], s[i+2:], true
		}
	}
	return s, "", false
}

// simpleHost accepts a non-empty host[:port] of letters, digits and
// ".-_:[]"; anything else is left to net/http.
func simpleHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// canonicalRequestKey is http.CanonicalHeaderKey of a valid token, without
// allocating when the name is already canonical.
func canonicalRequestKey(s string) string {
	upper := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if upper && c >= 'a' && c <= 'z' || !upper && c >= 'A' && c <= 'Z' {
			return http.CanonicalHeaderKey(s)
		}
		upper = c == '-'
	}
	return s
}

// handedConn is a connection given to net/http with the bytes the lean
// path had already read.
type handedConn struct {
	net.Conn
	rest []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn lets unwrapConn find the trackedConn underneath.
func (c *handedConn) NetConn() net.Conn { return c.Conn }

// handoffListener is the listener of the net/http server behind a lean
// one: Accept returns the connections handed off.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to the server; false when it no longer accepts.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// h1Writer is the ResponseWriter of the lean path, one per connection.
type h1Writer struct {
	c      *h1Conn
	header http.Header
	pend   []byte // body held back before the head is sent

	status      int
	wroteHeader bool // the final status is set
	headerSent  bool // the head is in the write buffer
	head        bool // response to HEAD
	chunked     bool
	closeAfter  bool
	clen        int64 // declared Content-Length; -1: none
	written     int64
	err         error // a failed write to the client
}

func (w *h1Writer) reset(head, closeAfter bool) {
	clear(w.header)
	*w = h1Writer{c: w.c, header: w.header, pend: w.pend[:0], head: head, closeAfter: closeAfter, clen: -1}
}

func (w *h1Writer) Header() http.Header { return w.header }

func (w *h1Writer) WriteHeader(code int) {
	if w.headerSent || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once, with the header as it is.
		bw := w.c.bw
		writeStatusLine(bw, code)
		w.writeFields(bw, code)
		_, _ = bw.WriteString("\r\n")
		w.setErr(bw.Flush())
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.clen = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *h1Writer) bodyAllowed() bool {
	s := w.status
	return !(s >= 100 && s < 200 || s == http.StatusNoContent || s == http.StatusNotModified)
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	w.written += int64(len(p))
	if !w.headerSent {
		if len(w.pend)+len(p) <= cap(w.pend) {
			w.pend = append(w.pend, p...)
			return len(p), nil
		}
		w.sendHead(false, p)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *h1Writer) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// writeBody writes p to the connection, framed as a chunk when chunked.
func (w *h1Writer) writeBody(p []byte) {
	if w.head || len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		writeUint(bw, uint64(len(p)), 16)
		_, _ = bw.WriteString("\r\n")
	}
	_, err := bw.Write(p)
	w.setErr(err)
	if w.chunked {
		_, err = bw.WriteString("\r\n")
		w.setErr(err)
	}
}

// Flush sends the head if not yet sent and everything buffered.
func (w *h1Writer) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *h1Writer) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHead(false, nil)
	}
	w.setErr(w.c.bw.Flush())
	return w.err
}

// finish completes the response after the handler returned.
func (w *h1Writer) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHead(true, nil)
	}
	bw := w.c.bw
	if w.chunked && !w.head {
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers(bw)
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
	}
	if w.clen >= 0 && w.written != w.clen && !w.head && w.bodyAllowed() {
		w.closeAfter = true // the client would wait for the rest
	}
	w.setErr(bw.Flush())
	return w.err
}

// sendHead writes the status line and header, then the held-back body.
// done: the handler has returned, so the body's length is known; first is
// the body write that did not fit the held-back part (for sniffing).
func (w *h1Writer) sendHead(done bool, first []byte) {
	w.headerSent = true
	h := w.header
	bw := w.c.bw
	allowed := w.bodyAllowed()
	_, trailers := h["Trailer"]
	if allowed {
		switch {
		case w.clen >= 0:
		case done && !trailers && (!w.head || len(w.pend) > 0):
			w.clen = int64(len(w.pend))
		case !w.head:
			w.chunked = true
		}
	}
	if tokenListHas(h["Connection"], "close") || w.c.s.closing.Load() {
		w.closeAfter = true
	}
	writeStatusLine(bw, w.status)
	w.writeFields(bw, w.status)
	if _, ok := h["Date"]; !ok {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(w.c.s.dateFor(time.Now()))
		_, _ = bw.WriteString("\r\n")
	}
	if allowed {
		sniff := w.pend
		if len(sniff) == 0 {
			sniff = first
		}
		if _, ok := h["Content-Type"]; !ok && len(h["Content-Encoding"]) == 0 && len(sniff) > 0 {
			_, _ = bw.WriteString("Content-Type: ")
			_, _ = bw.WriteString(http.DetectContentType(sniff))
			_, _ = bw.WriteString("\r\n")
		}
		if _, ok := h["Content-Length"]; !ok && w.clen >= 0 {
			_, _ = bw.WriteString("Content-Length: ")
			writeUint(bw, uint64(w.clen), 10)
			_, _ = bw.WriteString("\r\n")
		}
		if w.chunked {
			_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
	}
	if w.closeAfter && !tokenListHas(h["Connection"], "close") {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.setErr(err)
	pend := w.pend
	w.pend = w.pend[:0]
	w.writeBody(pend)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	if code >= 100 && code < 600 {
		_, _ = bw.WriteString(statusLines[code-100])
		return
	}
	_, _ = bw.WriteString(statusLine(code))
}

// statusLines are the status lines of codes 100-599, made once.
var statusLines = func() []string {
	l := make([]string, 500)
	for i := range l {
		l[i] = statusLine(100 + i)
	}
	return l
}()

func statusLine(code int) string {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
}

// writeUint writes n in base into bw's free space, without allocating
// (a full buffer is flushed first; an error stays in bw).
func writeUint(bw *bufio.Writer, n uint64, base int) {
	if bw.Available() < 20 {
		_ = bw.Flush()
	}
	_, _ = bw.Write(strconv.AppendUint(bw.AvailableBuffer(), n, base))
}

// writeFields writes the handler's header fields, leaving out what the
// server decides (framing, and what the status does not allow) and names
// that are not valid tokens; CR and LF in values become spaces.
func (w *h1Writer) writeFields(bw *bufio.Writer, code int) {
	noBody := code < 200 || code == http.StatusNoContent
	for k, vv := range w.header {
		switch k {
		case "Transfer-Encoding":
			continue
		case "Content-Length":
			if noBody || code == http.StatusNotModified {
				continue
			}
		case "Content-Type":
			if code == http.StatusNotModified {
				continue
			}
		case "Connection":
			if w.closeAfter {
				// Written once below, as "close".
				if !tokenListHas(vv, "close") {
					continue
				}
			}
		}
		if !validHeaderName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one header or trailer field line.
func writeField(bw *bufio.Writer, name, value string) {
	_, _ = bw.WriteString(name)
	_, _ = bw.WriteString(": ")
	writeValue(bw, trimSpaceCRLF(value))
	_, _ = bw.WriteString("\r\n")
}

// writeTrailers writes the values of the trailer fields announced in the
// Trailer header and those set with http.TrailerPrefix.
func (w *h1Writer) writeTrailers(bw *bufio.Writer) {
	h := w.header
	for _, list := range h["Trailer"] {
		for list != "" {
			var k string
			k, list, _ = cutComma(list)
			k = http.CanonicalHeaderKey(k)
			if !validHeaderName(k) {
				continue
			}
			for _, v := range h[k] {
				writeField(bw, k, v)
			}
		}
	}
	for k, vv := range h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !validHeaderName(name) {
			continue
		}
		for _, v := range vv {
			writeField(bw, name, v)
		}
	}
}

// trimSpaceCRLF trims spaces, tabs, CR and LF at both ends (as net/http
// does with values it writes).
func trimSpaceCRLF(s string) string {
	isSp := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(s) > 0 && isSp(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSp(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

var _ io.Writer = (*h1Writer)(nil)

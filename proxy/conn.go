package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xlb-project/xlb/proxy/config"

	"github.com/xlb-project/xlb/proxy/internal/concurrency"
)

// trackedConn wraps every accepted client connection. It lets the proxy
// find connections that a WebSocket upgrade hijacked (Server.Shutdown does
// not cover them) so drain, reload and shutdown can close them, and on plain
// listeners it watches the request header blocks for Content-Length and
// Transfer-Encoding together, which net/http accepts (it drops
// Content-Length) but which the proxy rejects as a smuggling attempt.
type trackedConn struct {
	net.Conn
	reg *connRegistry
	// peer and peerStr are the remote address, parsed once per connection.
	peer      netip.Addr
	peerStr   string
	peerSlice []string // []string{peerStr}, shared read-only
	// fwd caches the forwarding header values of the connection's last
	// request; requests on one connection mostly name the same host.
	fwd atomic.Pointer[fwdValues]

	// backend is the backend an upgraded connection is tunnelled to.
	backend atomic.Pointer[backend]
	closed  atomic.Bool
	// perClient counted this connection under limitKey (nil: not counted).
	perClient *concurrency.PerClient
	limitKey  netip.Addr

	// writeTimeout bounds a write that makes no progress; armed is when
	// the write deadline was last set (UnixNano).
	writeTimeout time.Duration
	armed        atomic.Int64

	// body is the listener's request body limits (read-only, shared).
	body *config.BodyLimits

	// Header sniffing (plain HTTP/1 listeners only); touched only by the
	// connection's reading goroutine, except smuggled.
	sniff     bool
	lineBuf   [20]byte
	lineLen   int  // bytes of the current line in lineBuf (capped)
	inBlock   bool // a line since the last empty line
	inRequest bool // the block began with something like a request line
	sawCL     bool
	sawTE     bool
	smuggled  atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.sniff && n > 0 {
		c.scan(p[:n])
	}
	return n, err
}

// Write fails when the client accepts nothing for the listener's
// write_timeout (as nginx's send_timeout): every write makes sure the
// deadline is at least 7/8 of the timeout away, moving it only when 1/8 has
// passed since it was set, so that most writes change no timer.
func (c *trackedConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		now := time.Now()
		if n := now.UnixNano(); n-c.armed.Load() > int64(c.writeTimeout/8) {
			c.armed.Store(n)
			if err := c.Conn.SetWriteDeadline(now.Add(c.writeTimeout)); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Write(p)
}

// Parked is called by the lean server when the connection parks: the
// forwarding values are made again for the next request.
func (c *trackedConn) Parked() { c.fwd.Store(nil) }

// NetConn gives the connection underneath (the lean server peeks at its
// socket through it).
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.reg.removeUpgraded(c)
		if c.perClient != nil {
			c.perClient.Release(c.limitKey)
		}
	}
	return c.Conn.Close()
}

// scan looks at the start of every line. A header block is the lines after
// a request line up to the first empty line; the proxy sees all bytes of the
// connection, bodies included, so a body line that looks like a header can
// at worst make the proxy refuse a chunked request whose body contains both
// header names at line starts between two empty lines.
func (c *trackedConn) scan(p []byte) {
	for len(p) > 0 {
		if c.lineLen < len(c.lineBuf) {
			// Collect the start of the line.
			i := bytes.IndexByte(p, '\n')
			end := len(p)
			if i >= 0 {
				end = i
			}
			k := copy(c.lineBuf[c.lineLen:], p[:end])
			c.lineLen += k
			if i < 0 {
				return // wait for the rest of the line
			}
			c.endLine()
			p = p[i+1:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return
		}
		c.endLine()
		p = p[i+1:]
	}
}

func (c *trackedConn) endLine() {
	line := c.lineBuf[:min(c.lineLen, len(c.lineBuf))]
	c.lineLen = 0
	if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
		if c.inRequest && c.sawCL && c.sawTE {
			c.smuggled.Store(true)
		}
		c.sawCL, c.sawTE, c.inBlock, c.inRequest = false, false, false, false
		return
	}
	if !c.inBlock {
		// First line of a block: only a request line starts a header block.
		c.inBlock = true
		c.inRequest = looksLikeRequestLine(line)
		return
	}
	if hasFoldPrefix(line, "content-length:") || hasFoldPrefix(line, "content-length ") {
		c.sawCL = true
	} else if hasFoldPrefix(line, "transfer-encoding:") || hasFoldPrefix(line, "transfer-encoding ") {
		c.sawTE = true
	}
}

// looksLikeRequestLine reports whether line starts like "METHOD /",
// "METHOD *" or "METHOD http".
func looksLikeRequestLine(line []byte) bool {
	i := 0
	for i < len(line) && 'A' <= line[i] && line[i] <= 'Z' {
		i++
	}
	if i == 0 || i+1 >= len(line) || line[i] != ' ' {
		return false
	}
	switch line[i+1] {
	case '/', '*', 'h', 'H':
		return true
	}
	return false
}

func hasFoldPrefix(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// trackingListener wraps accepted connections in trackedConn, and refuses
// those over the per-client connection limit.
type trackingListener struct {
	net.Listener
	reg          *connRegistry
	sniff        bool
	writeTimeout time.Duration
	body         *config.BodyLimits

	perClient *concurrency.PerClient // nil: no per-client limit
	exempt    func(netip.Addr) bool  // trusted proxies, not counted
	refusal   []byte                 // the 503 for plain listeners; nil: just close
	refused   prometheus.Counter
}

func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, reg: l.reg, sniff: l.sniff, writeTimeout: l.writeTimeout, body: l.body}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			if a, ok := netip.AddrFromSlice(ta.IP); ok {
				tc.peer = a.Unmap()
				tc.peerStr = tc.peer.String()
				tc.peerSlice = []string{tc.peerStr}
			}
		}
		if l.perClient != nil && !l.exempt(tc.peer) {
			key, ok := l.perClient.Acquire(tc.peer)
			if !ok {
				l.refused.Inc()
				go refuseConn(c, l.refusal)
				continue
			}
			tc.perClient, tc.limitKey = l.perClient, key
		}
		return tc, nil
	}
}

// refuseConn answers a connection over its client's limit with the 503
// (when not TLS) and closes it; it reads what the client sent meanwhile
// (for a second at most) so that the close does not reset the connection
// before the answer is read.
func refuseConn(c net.Conn, refusal []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if refusal == nil {
		return
	}
	if _, err := c.Write(refusal); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// connRegistry holds the client connections that were hijacked for an
// upgrade and are still open.
type connRegistry struct {
	mu       sync.Mutex
	upgraded map[*trackedConn]struct{}
	gauge    interface{ Set(float64) }
}

func newConnRegistry(gauge interface{ Set(float64) }) *connRegistry {
	return &connRegistry{upgraded: map[*trackedConn]struct{}{}, gauge: gauge}
}

func (r *connRegistry) addUpgraded(c *trackedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.closed.Load() {
		return
	}
	r.upgraded[c] = struct{}{}
	r.gauge.Set(float64(len(r.upgraded)))
}

func (r *connRegistry) removeUpgraded(c *trackedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.upgraded[c]; ok {
		delete(r.upgraded, c)
		r.gauge.Set(float64(len(r.upgraded)))
	}
}

// closeUpgraded closes the upgraded connections for which match is true and
// returns how many it closed.
func (r *connRegistry) closeUpgraded(match func(*backend) bool) int {
	r.mu.Lock()
	var list []*trackedConn
	for c := range r.upgraded {
		if match(c.backend.Load()) {
			list = append(list, c)
		}
	}
	r.mu.Unlock()
	for _, c := range list {
		c.Close()
	}
	return len(list)
}

func (r *connRegistry) countUpgraded(match func(*backend) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for c := range r.upgraded {
		if match(c.backend.Load()) {
			n++
		}
	}
	return n
}

type connKey struct{}

// unwrapConn finds the trackedConn under c (a TLS connection wraps it).
func unwrapConn(c net.Conn) *trackedConn {
	for {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// connContext stores the trackedConn in the connection's base context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc := unwrapConn(c); tc != nil {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// connState registers a connection when net/http hands it to an upgrade.
func (r *connRegistry) connState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	if tc := unwrapConn(c); tc != nil && tc.backend.Load() != nil {
		r.addUpgraded(tc)
	}
}

func requestConn(r *http.Request) *trackedConn {
	tc, _ := r.Context().Value(connKey{}).(*trackedConn)
	return tc
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/internal/pathnorm"
	"github.com/xlb-project/xlb/proxy/internal/upstream"
	"github.com/xlb-project/xlb/proxy/internal/wire"
	"github.com/xlb-project/xlb/proxy/middleware"
)

// exchange is the per-request state, pooled. It is also the ResponseWriter
// the route's chain writes to, recording status and bytes; Unwrap gives
// http.ResponseController (flush, hijack) the server's writer.
type exchange struct {
	w           http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	// interim: an informational (1xx) response went to the client, so the
	// request is not retried.
	interim bool

	st      *state
	route   *route
	backend *backend
	start   time.Time
	// sent is when forwarding began; respondedAt when the backend's
	// response headers arrived (or the exchange with it failed).
	sent        time.Time
	respondedAt time.Time
	failed      bool
	// clientFault: the exchange broke because of the client's request body;
	// nothing is recorded against the backend.
	clientFault bool
	reqID       string
	peer        netip.Addr // socket peer
	peerStr     string
	peerSlice   []string     // []string{peerStr}, read-only, from the connection when it has one
	conn        *trackedConn // nil: not known
	reqIDs      []string     // []string{reqID}, read-only
	client      netip.Addr   // client by trusted forwarding headers, else peer
	trusted     bool         // peer is a trusted proxy
	tls         bool
	origPath    string
	// outHeader is the outgoing request's header map, kept across the
	// exchange's reuses (cleared between requests).
	outHeader http.Header
}

// ClientAddr implements middleware.Request.
func (e *exchange) ClientAddr() netip.Addr { return e.client }

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

func (e *exchange) Header() http.Header { return e.w.Header() }

func (e *exchange) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		e.interim = true
		e.w.WriteHeader(code) // informational: not the final status
		return
	}
	if e.wroteHeader {
		return
	}
	e.wroteHeader = true
	e.status = code
	e.w.WriteHeader(code)
}

func (e *exchange) Write(p []byte) (int, error) {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	n, err := e.w.Write(p)
	e.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (e *exchange) Unwrap() http.ResponseWriter { return e.w }

// Flush implements http.Flusher for middleware that asserts it.
func (e *exchange) Flush() {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(e.w).Flush()
}

// ServeHTTP is the entry point of every listener.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := p.state.Load()
	e := exchangePool.Get().(*exchange)
	*e = exchange{w: w, st: st, start: time.Now(), tls: r.TLS != nil, origPath: r.URL.Path, outHeader: e.outHeader}
	// Deferred: a response the backend cuts short panics out of the handler.
	defer p.finish(e, r)

	tc := requestConn(r)
	if tc != nil && tc.smuggled.Load() {
		// Content-Length and Transfer-Encoding in one request: refuse it and
		// everything after it on this connection.
		w.Header().Set("Connection", "close")
		http.Error(e, "request has both Content-Length and Transfer-Encoding", http.StatusBadRequest)
		return
	}

	if tc != nil && tc.peer.IsValid() {
		e.peer, e.peerStr, e.peerSlice = tc.peer, tc.peerStr, tc.peerSlice
		e.conn = tc
	} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		e.peer = ap.Addr().Unmap()
		e.peerStr = e.peer.String()
	}
	e.client = e.peer
	if len(st.trusted) > 0 && st.isTrusted(e.peer) {
		e.trusted = true
		e.client = st.clients.Addr(e.peer, r.Header["X-Forwarded-For"], r.Header["Forwarded"])
	}

	hdr := st.reqIDHeader
	if v := r.Header[hdr]; len(v) == 1 && validRequestID(v[0]) {
		e.reqID, e.reqIDs = v[0], v
	} else {
		e.reqID = p.ids.next()
		e.reqIDs = []string{e.reqID}
		r.Header[hdr] = e.reqIDs
	}
	// One slice, shared read-only by the request, the response and the
	// outgoing request (an Add appends to a copy: its capacity is 1).
	w.Header()[hdr] = e.reqIDs[:1:1]

	// Only WebSocket upgrades pass; any other Upgrade (h2c in particular) is
	// dropped so the request is forwarded as plain HTTP/1.1.
	if up, ok := r.Header["Upgrade"]; ok && !(len(up) == 1 && strings.EqualFold(up[0], "websocket")) {
		delete(r.Header, "Upgrade")
		delete(r.Header, "Http2-Settings")
	}

	// Routes match, and backends get, the normalised path only.
	if esc := r.URL.EscapedPath(); esc != "" {
		np, err := pathnorm.Normalize(esc, st.paths)
		if err != nil {
			http.Error(e, "request path cannot be normalised: "+err.Error(), http.StatusBadRequest)
			return
		}
		if np != esc {
			setEscapedPath(r.URL, np)
		}
	}

	host := hostOnly(r.Host)
	var q queryCache
	for _, rt := range st.routes {
		if rt.match(r, host, &q) {
			e.route = rt
			break
		}
	}
	if e.route == nil {
		http.Error(e, "no route matches the request", http.StatusNotFound)
		return
	}
	if g := e.route.inflight; g != nil {
		if !g.enter(e) {
			return
		}
		defer g.leave()
	}
	if e.route.handler == nil {
		e.route.serve(e, e, r)
	} else {
		// The chain finds e by unwrapping its writer (middleware.Of): no
		// per-request context value.
		e.route.handler.ServeHTTP(e, r)
	}
}

// finish records metrics and the access log line and recycles e.
func (p *Proxy) finish(e *exchange, r *http.Request) {
	if !e.wroteHeader {
		e.status = http.StatusOK
	}
	end := time.Now()
	ci := classIndex(e.status)
	if rt := e.route; rt != nil && rt.metrics != nil {
		rt.metrics.requests[ci].Inc()
		rt.metrics.duration.Observe(end.Sub(e.start).Seconds())
	}
	if b := e.backend; b != nil && b.metrics != nil {
		if e.failed {
			b.metrics.requests[0].Inc()
			b.metrics.failures.Inc()
		} else {
			b.metrics.requests[ci].Inc()
		}
	}
	if al := e.st.accessLog; al != nil {
		al.write(e, r, end)
	}
	h := e.outHeader
	*e = exchange{}
	if len(h) <= 64 {
		// Reused by the next request's send; its values were references.
		clear(h)
		e.outHeader = h
	}
	exchangePool.Put(e)
}

// serve is the last handler of a route's chain. It writes to w, which is e
// or a middleware's writer that ends in e.
func (rt *route) serve(w http.ResponseWriter, e *exchange, r *http.Request) {
	switch {
	case rt.respond != nil:
		h := w.Header()
		h["Content-Type"] = []string{rt.respond.ContentType}
		rt.respOps.apply(h)
		w.WriteHeader(rt.respond.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(rt.respond.Body))
		}
	case rt.redirect != nil:
		h := w.Header()
		h["Location"] = []string{redirectURL(rt.redirect, r, e.tls)}
		rt.respOps.apply(h)
		w.WriteHeader(rt.redirect.Code)
	default:
		rt.forward(w, e, r)
	}
}

// finalHandler adapts route.serve to http.Handler for the end of a chain.
type finalHandler struct{ rt *route }

func (f finalHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e, _ := middleware.Of(w, r.Context()).(*exchange)
	if e == nil {
		http.Error(w, "internal error: request has no exchange", http.StatusInternalServerError)
		return
	}
	f.rt.serve(w, e, r)
}

func (rt *route) forward(w http.ResponseWriter, e *exchange, r *http.Request) {
	if g := rt.pool.inflight; g != nil {
		if !g.enter(w) {
			return
		}
		defer g.leave()
	}
	if rt.rewrite != nil {
		rt.rewrite.apply(r.URL)
	}
	if rt.reqOps.host != "" {
		r.Host = rt.reqOps.host
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		lim := rt.body
		tc := e.conn
		if tc == nil {
			tc = requestConn(r)
		}
		if tc != nil && tc.body != nil {
			lim = tc.body.Merge(rt.body)
		}
		if lim.MaxBodyBytes > 0 && r.ContentLength > lim.MaxBodyBytes {
			w.Header().Set("Connection", "close")
			http.Error(w, fmt.Sprintf("request body of %d bytes is larger than max_body_bytes %d", r.ContentLength, lim.MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		if lim != (config.BodyLimits{}) {
			r.Body = newLimitedBody(r.Body, e.w, lim)
		}
	}
	if _, upgrade := r.Header["Upgrade"]; !upgrade {
		rt.forwardPlain(w, e, r)
		return
	}
	p := rt.pool
	b := p.pick(w, r, e)
	if b == nil {
		e.st.metrics.noBackend.WithLabelValues(p.name).Inc()
		http.Error(w, "no backend available", http.StatusServiceUnavailable)
		return
	}
	e.backend = b
	if tc := requestConn(r); tc != nil {
		tc.backend.Store(b)
	}
	ctx := r.Context()
	if middleware.RequestOf(ctx) == nil {
		// Only net/http/httputil (upgrades) finds the exchange through the
		// context; the plain path gets it as an argument.
		ctx = middleware.WithRequest(ctx, e)
	}
	if rt.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rt.timeout))
		defer cancel()
	}
	b.Acquire()
	b.metrics.inFlight.Inc()
	sent := time.Now()
	e.sent = sent
	// Deferred: the accounting must happen however the handler ends.
	defer func() { p.release(e, b, sent, e.failed || e.status >= 500) }()
	e.st.rp.ServeHTTP(w, r.WithContext(ctx))
	if !e.wroteHeader && !e.failed {
		// net/http/httputil wrote the 101 on the hijacked connection.
		e.status, e.wroteHeader = http.StatusSwitchingProtocols, true
	}
}

// fail answers a request whose exchange with the backend failed before a
// response: 504 for a timeout, 502 otherwise, nothing (recorded as 499)
// when the client went away.
func fail(w http.ResponseWriter, e *exchange, ctx context.Context, err error) {
	if errors.Is(err, upstream.ErrRequestBody) {
		failClient(w, e, err)
		return
	}
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status = http.StatusGatewayTimeout
	}
	if e != nil {
		if e.respondedAt.IsZero() {
			e.respondedAt = time.Now()
			e.failed = true
		}
		if ctx.Err() == context.Canceled && e.st != nil {
			// The client went away: not the backend's fault.
			e.failed = false
			status = 499
		}
		if e.st != nil && e.st.log != nil && status != 499 {
			e.st.log.Warn("proxy to backend failed", "route", e.route.name, "backend", e.backend.ID, "request_id", e.reqID, "err", err)
		}
	}
	if status == 499 {
		// Nobody reads the answer; record the status only.
		if e != nil {
			e.status, e.wroteHeader = status, true
		}
		return
	}
	w.WriteHeader(status)
}

// failClient answers a request whose body could not be read (malformed,
// too slow, too large): 400, 408 or 413, and the connection is closed, as
// what is left of the body cannot be trusted. The backend is not blamed:
// no failure, no outlier report, no latency sample. The answer is written
// even when reading the body cancelled the request's context.
func failClient(w http.ResponseWriter, e *exchange, err error) {
	status := bodyStatus(err)
	if e != nil {
		e.clientFault = true
		if e.respondedAt.IsZero() {
			e.respondedAt = time.Now()
		}
		if e.st != nil && e.st.log != nil {
			e.st.log.Info("request body refused", "route", e.route.name, "status", status, "request_id", e.reqID, "err", err)
		}
	}
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
}

// bufferPool lends 32 KiB copy buffers to net/http/httputil.
type bufferPool struct{}

func (bufferPool) Get() []byte { return *(wire.Buffers.Get().(*[]byte)) }

func (bufferPool) Put(b []byte) {
	if cap(b) == wire.BufferSize {
		wire.Buffers.Put(&b)
	}
}

// validRequestID accepts 1-128 visible ASCII characters.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\' {
			return false
		}
	}
	return true
}

// idSource generates request ids: a random per-process prefix and a counter.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func (s *idSource) next() string {
	n := s.n.Add(1)
	var buf [48]byte
	b := append(buf[:0], s.prefix...)
	b = append(b, '-')
	b = strconv.AppendUint(b, n, 36)
	return string(b)
}

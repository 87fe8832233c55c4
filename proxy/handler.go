package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-project/xlb/proxy/internal/wire"
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

type exchangeKey struct{}

// exchangeOf returns the exchange of a request inside a route's chain.
func exchangeOf(r *http.Request) *exchange {
	e, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return e
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
		e.client = st.clientFromXFF(r.Header["X-Forwarded-For"], e.peer)
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
	if e.route.handler == nil {
		e.route.serve(e, e, r)
	} else {
		e.route.handler.ServeHTTP(e, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, e)))
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
	e := exchangeOf(r)
	if e == nil {
		http.Error(w, "internal error: request has no exchange", http.StatusInternalServerError)
		return
	}
	f.rt.serve(w, e, r)
}

func (rt *route) forward(w http.ResponseWriter, e *exchange, r *http.Request) {
	if rt.rewrite != nil {
		rt.rewrite.apply(r.URL)
	}
	if rt.reqOps.host != "" {
		r.Host = rt.reqOps.host
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
	if ctx.Value(exchangeKey{}) == nil {
		// Only net/http/httputil (upgrades) finds the exchange through the
		// context; the plain path gets it as an argument.
		ctx = context.WithValue(ctx, exchangeKey{}, e)
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
	defer func() {
		if e.respondedAt.IsZero() {
			e.respondedAt = time.Now()
		}
		lat := e.respondedAt.Sub(sent)
		b.metrics.inFlight.Dec()
		b.metrics.duration.Observe(lat.Seconds())
		b.Release(lat, e.failed)
		p.report(b, e.failed || e.status >= 500)
	}()
	e.st.rp.ServeHTTP(w, r.WithContext(ctx))
	if !e.wroteHeader && !e.failed {
		// net/http/httputil wrote the 101 on the hijacked connection.
		e.status, e.wroteHeader = http.StatusSwitchingProtocols, true
	}
}

// newReverseProxy builds the forwarding engine shared by all routes of a
// state. Rewrite (never Director) runs after net/http/httputil removed the
// hop-by-hop headers, including those the client named in Connection, and
// the client's X-Forwarded-*/Forwarded headers.
func newReverseProxy(st *state, transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        st.rewrite,
		Transport:      transport,
		FlushInterval:  0, // net/http/httputil flushes at once for streams without a length and for SSE
		BufferPool:     bufferPool{},
		ModifyResponse: modifyResponse,
		ErrorHandler:   errorHandler,
		ErrorLog:       nil,
	}
}

func (st *state) rewrite(pr *httputil.ProxyRequest) {
	e := pr.In.Context().Value(exchangeKey{}).(*exchange)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = e.backend.ID
	st.forwardingHeaders(out.Header, pr.In.Header, e, pr.In.Host)
}

// forwardingHeaders sets X-Forwarded-*, Forwarded and the request id on the
// outgoing header h (from which the client's own were removed), trusting
// the incoming values in only from trusted proxies, then applies the
// route's request header ops.
func (st *state) forwardingHeaders(h, in http.Header, e *exchange, host string) {
	peer := e.peerStr
	proto := "http"
	if e.tls {
		proto = "https"
	}
	fv := e.fwdValues(host)
	if e.trusted {
		if prior := in["X-Forwarded-For"]; len(prior) > 0 {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + peer}
		} else {
			h["X-Forwarded-For"] = e.peerXFF()
		}
		if v := in["X-Forwarded-Proto"]; len(v) > 0 {
			h["X-Forwarded-Proto"] = v
		} else {
			h["X-Forwarded-Proto"] = protoValue(e.tls)
		}
		if v := in["X-Forwarded-Host"]; len(v) > 0 {
			h["X-Forwarded-Host"] = v
		} else {
			h["X-Forwarded-Host"] = fv.host[:1:1]
		}
	} else {
		h["X-Forwarded-For"] = e.peerXFF()
		h["X-Forwarded-Proto"] = protoValue(e.tls)
		h["X-Forwarded-Host"] = fv.host[:1:1]
	}
	if prior := in["Forwarded"]; e.trusted && len(prior) > 0 {
		h["Forwarded"] = []string{strings.Join(prior, ", ") + ", " + forwardedElement(e.peer, host, proto)}
	} else {
		h["Forwarded"] = fv.forwarded[:1:1]
	}
	// Set again: a client naming it in Connection would have it removed.
	h[st.reqIDHeader] = e.reqIDs[:1:1]
	e.route.reqOps.apply(h)
}

// Read-only header values shared by all requests; a header op that adds to
// them appends to a copy (their capacity is 1).
var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

func protoValue(tls bool) []string {
	if tls {
		return protoHTTPS[:1:1]
	}
	return protoHTTP[:1:1]
}

// fwdValues are the X-Forwarded-Host and Forwarded values for one host,
// peer and scheme, shared read-only (capacity 1).
type fwdValues struct {
	hostName  string
	tls       bool
	host      []string
	forwarded []string
}

// fwdValues returns the values for host, from the connection's cache when
// its last request had the same host.
func (e *exchange) fwdValues(host string) *fwdValues {
	if e.conn != nil {
		if v := e.conn.fwd.Load(); v != nil && v.hostName == host && v.tls == e.tls {
			return v
		}
	}
	proto := "http"
	if e.tls {
		proto = "https"
	}
	v := &fwdValues{hostName: host, tls: e.tls, host: []string{host}, forwarded: []string{forwardedElement(e.peer, host, proto)}}
	if e.conn != nil {
		e.conn.fwd.Store(v)
	}
	return v
}

func (e *exchange) peerXFF() []string {
	if e.peerSlice != nil {
		return e.peerSlice[:1:1]
	}
	return []string{e.peerStr}
}

// forwardedElement is one RFC 7239 element: for=...;host="...";proto=...
func forwardedElement(peer netip.Addr, host, proto string) string {
	var b strings.Builder
	b.Grow(48 + len(host))
	b.WriteString("for=")
	switch {
	case peer.Is6():
		b.WriteString(`"[`)
		b.WriteString(peer.String())
		b.WriteString(`]"`)
	case peer.IsValid():
		b.WriteString(peer.String())
	default:
		b.WriteString("unknown")
	}
	if host != "" && !strings.ContainsAny(host, "\"\\") {
		b.WriteString(`;host="`)
		b.WriteString(host)
		b.WriteByte('"')
	}
	b.WriteString(";proto=")
	b.WriteString(proto)
	return b.String()
}

func modifyResponse(resp *http.Response) error {
	e, _ := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	if e == nil {
		return nil
	}
	e.respondedAt = time.Now()
	e.route.respOps.apply(resp.Header)
	return nil
}

func errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	e, _ := r.Context().Value(exchangeKey{}).(*exchange)
	fail(w, e, r.Context(), err)
}

// fail answers a request whose exchange with the backend failed before a
// response: 504 for a timeout, 502 otherwise, nothing (recorded as 499)
// when the client went away.
func fail(w http.ResponseWriter, e *exchange, ctx context.Context, err error) {
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

// bufferPool lends 32 KiB copy buffers to net/http/httputil.
type bufferPool struct{}

func (bufferPool) Get() []byte { return *(wire.Buffers.Get().(*[]byte)) }

func (bufferPool) Put(b []byte) {
	if cap(b) == wire.BufferSize {
		wire.Buffers.Put(&b)
	}
}

// isTrusted reports whether a is one of the configured trusted proxies.
func (st *state) isTrusted(a netip.Addr) bool {
	for _, p := range st.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientFromXFF walks X-Forwarded-For from the right, skipping trusted
// proxies, and returns the first address that is not one (the client as the
// trusted front ends saw it); peer when there is none.
func (st *state) clientFromXFF(xff []string, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		list := xff[i]
		for list != "" {
			var item string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				item, list = list[j+1:], list[:j]
			} else {
				item, list = list, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(item))
			if err != nil {
				return client
			}
			a = a.Unmap()
			client = a
			if !st.isTrusted(a) {
				return a
			}
		}
	}
	return client
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

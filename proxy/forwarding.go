package proxy

// What the backend is told about the client: X-Forwarded-*, Forwarded
// and the request ID, and the net/http/httputil engine that forwards
// upgrades with the same rules.

import (
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"time"
)

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

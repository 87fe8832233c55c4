package middleware

import (
	"context"
	"net/http"
	"net/netip"
)

// Request is what the proxy has judged about a request and tells its
// middlewares.
type Request interface {
	// ClientAddr is the client's address: the socket's peer, or, when the
	// peer is one of trusted_proxies, the rightmost address of
	// X-Forwarded-For that is not a trusted proxy. Never an address a
	// client can choose by sending a header.
	ClientAddr() netip.Addr
}

type requestKey struct{}

// WithRequest returns ctx carrying req; the proxy calls it once per
// request, before the route's chain.
func WithRequest(ctx context.Context, req Request) context.Context {
	return context.WithValue(ctx, requestKey{}, req)
}

// RequestOf returns what WithRequest stored in ctx, or nil.
func RequestOf(ctx context.Context) Request {
	req, _ := ctx.Value(requestKey{}).(Request)
	return req
}

// Of returns what the proxy judged about the request a middleware is
// serving: the proxy's own ResponseWriter implements Request, so it is
// found by unwrapping w (writers wrapped by middlewares have Unwrap), with
// no per-request context value; else from ctx (WithRequest); else nil.
func Of(w http.ResponseWriter, ctx context.Context) Request {
	for w != nil {
		if req, ok := w.(Request); ok {
			return req
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	return RequestOf(ctx)
}

// ClientAddr is the client address the proxy judged for r (see Of); outside
// the proxy (a test server, say), the peer in r.RemoteAddr.
func ClientAddr(w http.ResponseWriter, r *http.Request) netip.Addr {
	if req := Of(w, r.Context()); req != nil {
		return req.ClientAddr()
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Package middleware is where per-route request handlers plug into the
// proxy: rate limiting, circuit breaking, retries and the like, each in its
// own subpackage (proxy/middleware/ratelimit, ...), none of which the proxy
// itself imports. The program that builds the proxy registers them by kind
// in the proxy's Options.Middleware; a route lists the kinds it uses:
//
//	routes:
//	  - name: api
//	    match: {path: {prefix: /api}}
//	    pool: app
//	    middleware:
//	      - kind: ratelimit          # a key of Options.Middleware
//	        config: {rate: 100}      # handed to the Factory as a yaml.Node
//
// # Where a middleware runs
//
// After routing and before backend selection: the route is chosen, the
// request ID is set and the client's forwarding headers are judged, but no
// backend is picked yet. The chain ends in the route's own action (forward
// to a backend, redirect or respond). Middlewares run in the order the route
// lists them: the first listed is the outermost, sees the request first and
// the response last. A middleware that answers itself (a 429, say) and does
// not call next stops the chain: no backend is picked, nothing is counted
// against one.
//
// # Writing one
//
// A package offers a Factory. It is called on every load and reload of the
// config, with the route's name and the entry's `config:` node (a zero Node
// when absent); it decodes and validates the node (strictly: unknown keys
// are errors, with the node's line) and returns the Middleware, or an error
// that makes the proxy refuse the config and keep running the old one. It
// must not start anything that outlives the Middleware it returns unless it
// also offers a way to stop it; state to keep across reloads (buckets, say)
// belongs in the value the program registers, not in the Factory's result.
//
// A Middleware wraps next once per compiled route. The handler it returns
// is called concurrently for every request of the route and must be safe
// for that. If it wraps the http.ResponseWriter, its wrapper must have an
// Unwrap() http.ResponseWriter method, so that flushing of streamed
// responses and WebSocket upgrades (http.ResponseController) reach the
// server's writer. It must not keep the request or the writer after it
// returned: both are reused for the connection's next request.
package middleware

import (
	"net/http"

	"gopkg.in/yaml.v3"
)

// Middleware wraps a route's next handler.
type Middleware func(next http.Handler) http.Handler

// Factory builds one Middleware of a route from its config node.
type Factory func(route string, cfg *yaml.Node) (Middleware, error)

// Chain wraps final in mws so that mws[0] runs first (outermost).
func Chain(final http.Handler, mws ...Middleware) http.Handler {
	h := final
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Package proxy is the L7 tier of xlb: an HTTP reverse proxy with listeners
// (HTTP/1.1, HTTP/2 over TLS, optional h2c), a routing table, backend pools
// balanced by proxy/balance, active health checks (healthd/check), graceful
// drain, hot reload, Prometheus metrics and a JSON access log.
//
// A config.Config is read from strict YAML with config.Load or
// config.Parse; [New] builds a [Proxy] from it and [Proxy.Run] serves until
// its context ends.
//
// Layout (imports point downwards only):
//
//	proxy               Proxy, reload, the handler chain, routing, pools,
//	                    listeners, forwarding, metrics, access log
//	proxy/config        config types, strict YAML parsing, validation
//	proxy/admin         admin API over a Unix socket: server and client
//	proxy/middleware    the interface per-route middlewares implement
//	proxy/balance       backend selection algorithms
//	proxy/sticky        signed affinity cookies
//	proxy/outlier       passive ejection of failing backends
//	proxy/discovery     backends from a file or DNS
//	proxy/internal/h1   the lean HTTP/1.1 server of plain listeners
//	proxy/internal/upstream  the HTTP/1.1 client towards backends
//	proxy/internal/wire header and framing helpers shared by both sides
package proxy

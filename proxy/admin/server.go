// Package admin is the proxy's local control API, served on a Unix socket
// (mode 0660: whoever can open it can change the proxy), and its client,
// which the CLI uses. The server works on a [Controller], which the proxy
// implements; it knows nothing else of the proxy.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/xlb-project/xlb/proxy/config"
)

// ErrNoBackend is returned (and, through the API, reported with 404) when a
// pool has no backend with the address given.
var ErrNoBackend = errors.New("no such backend")

// BackendInfo is one backend as the admin API lists it.
type BackendInfo struct {
	Pool     string `json:"pool"`
	Address  string `json:"address"`
	Weight   int    `json:"weight"`
	Health   string `json:"health"`
	Drained  bool   `json:"drained"`
	InFlight int64  `json:"in_flight"`
	Upgraded int    `json:"upgraded"`
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// Breaker is the backend's circuit breaker state (closed, open,
	// half_open); empty without a breaker.
	Breaker string `json:"breaker,omitempty"`
	// Ramp is the share of its weight a backend in slow start has, below 1;
	// 0 outside slow start.
	Ramp float64 `json:"slow_start,omitempty"`
}

// Controller is what the admin API changes and reads: the running proxy.
type Controller interface {
	// Backends lists every backend of every pool, in config order.
	Backends() []BackendInfo
	// Drain and Undrain change a backend's drain flag; ErrNoBackend (wrapped)
	// when the pool or the backend does not exist.
	Drain(pool, addr string) error
	Undrain(pool, addr string) error
	// Reload re-reads the config file and applies it.
	Reload() error
}

// Server is the admin API, served on a Unix socket (mode 0660):
//
//	GET  /v1/backends                          list backends (JSON []BackendInfo)
//	POST /v1/backends/drain?pool=P&address=A   drain a backend
//	POST /v1/backends/undrain?pool=P&address=A undrain it
//	POST /v1/reload                            re-read the config file
//	GET  /metrics                              Prometheus metrics
//
// Errors are JSON {"error": "..."} with 400 (bad input, invalid config),
// 404 (no such backend) or 405.
type Server struct {
	ctl     Controller
	metrics http.Handler
	status  http.Handler // on the metrics address; nil: none

	mu   sync.Mutex
	cfg  config.AdminConfig // what sock and met serve
	sock *endpoint
	met  *endpoint
}

func newMux(p Controller, metrics http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /v1/backends", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, p.Backends())
	})
	drain := func(on bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			pool, addr := r.URL.Query().Get("pool"), r.URL.Query().Get("address")
			if pool == "" || addr == "" {
				writeJSON(w, http.StatusBadRequest, apiError{"query parameters pool and address are required"})
				return
			}
			var err error
			if on {
				err = p.Drain(pool, addr)
			} else {
				err = p.Undrain(pool, addr)
			}
			if errors.Is(err, ErrNoBackend) {
				writeJSON(w, http.StatusNotFound, apiError{err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, struct {
				Pool    string `json:"pool"`
				Address string `json:"address"`
				Drained bool   `json:"drained"`
			}{pool, addr, on})
		}
	}
	mux.HandleFunc("POST /v1/backends/drain", drain(true))
	mux.HandleFunc("POST /v1/backends/undrain", drain(false))
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := p.Reload(); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct {
			Reloaded bool `json:"reloaded"`
		}{true})
	})
	return mux
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Start serves the admin API of p on cfg.Socket, and metrics and the
// read-only status page (any path but /metrics; nil: none) on
// cfg.MetricsAddress; either address may be empty.
func Start(cfg config.AdminConfig, p Controller, metrics, status http.Handler) (*Server, error) {
	a := &Server{ctl: p, metrics: metrics, status: status}
	commit, _, err := a.Update(cfg)
	if err != nil {
		return nil, err
	}
	commit()
	return a, nil
}

// Update prepares a switch to cfg: a socket or metrics address that
// changed is listened on now, and an error (naming the key) leaves
// everything as it was. commit puts the new ones in place and closes the
// ones they replace, gracefully (an answer in progress, such as the one to
// the reload that asked for the change, is still sent); cancel closes the
// new ones instead. One of them must be called.
func (a *Server) Update(cfg config.AdminConfig) (commit, cancel func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var sock, met *endpoint
	if cfg.Socket != a.cfg.Socket && cfg.Socket != "" {
		if sock, err = a.listenSocket(cfg.Socket); err != nil {
			return nil, nil, fmt.Errorf("admin.socket %q: %w", cfg.Socket, err)
		}
	}
	if cfg.MetricsAddress != a.cfg.MetricsAddress && cfg.MetricsAddress != "" {
		if met, err = a.listenMetrics(cfg.MetricsAddress); err != nil {
			sock.close()
			return nil, nil, fmt.Errorf("admin.metrics_address %q: %w", cfg.MetricsAddress, err)
		}
	}
	commit = func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if cfg.Socket != a.cfg.Socket {
			a.sock.shutdown()
			a.sock = sock
		}
		if cfg.MetricsAddress != a.cfg.MetricsAddress {
			a.met.shutdown()
			a.met = met
		}
		a.cfg = cfg
	}
	cancel = func() {
		sock.close()
		met.close()
	}
	return commit, cancel, nil
}

// endpoint is one server of the admin API: the socket or the metrics.
type endpoint struct {
	srv  *http.Server
	path string // the socket's, removed when closed
}

func (a *Server) listenSocket(path string) (*endpoint, error) {
	_ = os.Remove(path) // a stale socket of an earlier run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// The path is removed by close: closing the listener must not remove
	// a socket that a later listener made at the same path.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("chmod: %w", err)
	}
	srv := &http.Server{Handler: newMux(a.ctl, a.metrics), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &endpoint{srv: srv, path: path}, nil
}

func (a *Server) listenMetrics(addr string) (*endpoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics)
	if a.status != nil {
		mux.Handle("/", a.status)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &endpoint{srv: srv}, nil
}

// close stops serving at once; nil does nothing.
func (e *endpoint) close() {
	if e == nil {
		return
	}
	if e.path != "" {
		_ = os.Remove(e.path)
	}
	_ = e.srv.Close()
}

// shutdown stops taking connections at once and closes the open ones when
// their answers are sent (within shutdownGrace); nil does nothing.
func (e *endpoint) shutdown() {
	if e == nil {
		return
	}
	if e.path != "" {
		_ = os.Remove(e.path)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if e.srv.Shutdown(ctx) != nil {
			_ = e.srv.Close()
		}
	}()
}

// shutdownGrace bounds how long a replaced endpoint finishes its answers.
const shutdownGrace = 5 * time.Second

// Close stops serving and removes the socket.
func (a *Server) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sock.close()
	a.met.close()
	a.sock, a.met = nil, nil
	a.cfg = config.AdminConfig{}
}

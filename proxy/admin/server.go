// Package admin is the proxy's local control API, served on a Unix socket
// (mode 0660: whoever can open it can change the proxy), and its client,
// which the CLI uses. The server works on a [Controller], which the proxy
// implements; it knows nothing else of the proxy.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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
	srvs []*http.Server
	path string
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
	a := &Server{}
	if cfg.Socket != "" {
		_ = os.Remove(cfg.Socket) // a stale socket of an earlier run
		ln, err := net.Listen("unix", cfg.Socket)
		if err != nil {
			return nil, fmt.Errorf("listen on admin socket %s: %w", cfg.Socket, err)
		}
		if err := os.Chmod(cfg.Socket, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chmod admin socket %s: %w", cfg.Socket, err)
		}
		a.path = cfg.Socket
		srv := &http.Server{Handler: newMux(p, metrics), ReadHeaderTimeout: 5 * time.Second}
		a.srvs = append(a.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	if cfg.MetricsAddress != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("listen on metrics address %s: %w", cfg.MetricsAddress, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		if status != nil {
			mux.Handle("/", status)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		a.srvs = append(a.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	return a, nil
}

// Close stops serving and removes the socket.
func (a *Server) Close() {
	for _, s := range a.srvs {
		_ = s.Close()
	}
	if a.path != "" {
		_ = os.Remove(a.path)
	}
}

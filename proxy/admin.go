package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin API, served on a Unix socket (mode 0660):
//
//	GET  /v1/backends                          list backends (JSON []BackendInfo)
//	POST /v1/backends/drain?pool=P&address=A   drain a backend
//	POST /v1/backends/undrain?pool=P&address=A undrain it
//	POST /v1/reload                            re-read the config file
//	GET  /metrics                              Prometheus metrics
//
// Errors are JSON {"error": "..."} with 400 (bad input, invalid config),
// 404 (no such backend) or 405.
type adminServer struct {
	srvs []*http.Server
	path string
}

func promHandler(m *metrics) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (p *Proxy) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promHandler(p.metrics))
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

// startAdmin serves the admin API on cfg.Socket and the metrics on
// cfg.MetricsAddress; either may be empty.
func (p *Proxy) startAdmin(cfg AdminConfig) (*adminServer, error) {
	a := &adminServer{}
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
		srv := &http.Server{Handler: p.adminMux(), ReadHeaderTimeout: 5 * time.Second}
		a.srvs = append(a.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	if cfg.MetricsAddress != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("listen on metrics address %s: %w", cfg.MetricsAddress, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promHandler(p.metrics))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		a.srvs = append(a.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	return a, nil
}

func (a *adminServer) close() {
	for _, s := range a.srvs {
		_ = s.Close()
	}
	if a.path != "" {
		_ = os.Remove(a.path)
	}
}

// Client talks to a running proxy's admin socket.
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the admin socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://proxy" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach proxy admin socket: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read admin response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
			if resp.StatusCode == http.StatusNotFound {
				return fmt.Errorf("%w: %s", ErrNoBackend, strings.TrimPrefix(ae.Error, ErrNoBackend.Error()+": "))
			}
			return errors.New(ae.Error)
		}
		return fmt.Errorf("admin api: %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode admin response: %w", err)
		}
	}
	return nil
}

// Backends lists the proxy's backends.
func (c *Client) Backends(ctx context.Context) ([]BackendInfo, error) {
	var out []BackendInfo
	err := c.do(ctx, http.MethodGet, "/v1/backends", nil, &out)
	return out, err
}

// Drain drains a backend.
func (c *Client) Drain(ctx context.Context, pool, addr string) error {
	return c.do(ctx, http.MethodPost, "/v1/backends/drain", url.Values{"pool": {pool}, "address": {addr}}, nil)
}

// Undrain undrains a backend.
func (c *Client) Undrain(ctx context.Context, pool, addr string) error {
	return c.do(ctx, http.MethodPost, "/v1/backends/undrain", url.Values{"pool": {pool}, "address": {addr}}, nil)
}

// Reload asks the proxy to re-read its config file.
func (c *Client) Reload(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/reload", nil, nil)
}

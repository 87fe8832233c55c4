package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

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

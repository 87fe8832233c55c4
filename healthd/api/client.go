package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// ErrNotRunning: no daemon answers on the socket.
var ErrNotRunning = errors.New("daemon not running")

// Client talks to the daemon's API over its Unix socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		Socket: path,
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

// Status returns every VIP and backend.
func (c *Client) Status() (Status, error) {
	var st Status
	return st, c.do(http.MethodGet, PathStatus, nil, &st)
}

// Stats returns the datapath counters.
func (c *Client) Stats() (Stats, error) {
	var st Stats
	return st, c.do(http.MethodGet, PathStats, nil, &st)
}

// AddVIP adds a VIP.
func (c *Client) AddVIP(v VIPConfig) error { return c.do(http.MethodPost, PathVIPAdd, v, nil) }

// RemoveVIP removes a VIP.
func (c *Client) RemoveVIP(vip string) error {
	return c.do(http.MethodPost, PathVIPRemove, BackendRequest{VIP: vip}, nil)
}

// AddBackend adds a backend to a VIP.
func (c *Client) AddBackend(vip string, b BackendConfig) error {
	return c.do(http.MethodPost, PathBackendAdd, BackendRequest{VIP: vip, Backend: &b}, nil)
}

// RemoveBackend removes a backend at once.
func (c *Client) RemoveBackend(vip, addr string) error {
	return c.do(http.MethodPost, PathBackendRemove, BackendRequest{VIP: vip, Address: addr}, nil)
}

// Drain drains a backend; timeout 0 takes the VIP's drain timeout.
func (c *Client) Drain(vip, addr string, timeout time.Duration) error {
	return c.do(http.MethodPost, PathBackendDrain, BackendRequest{VIP: vip, Address: addr, Timeout: Duration(timeout)}, nil)
}

// Undrain makes a draining backend active again.
func (c *Client) Undrain(vip, addr string) error {
	return c.do(http.MethodPost, PathBackendUndrain, BackendRequest{VIP: vip, Address: addr}, nil)
}

// SetWeight changes a backend's weight.
func (c *Client) SetWeight(vip, addr string, w uint32) error {
	return c.do(http.MethodPost, PathBackendWeight, BackendRequest{VIP: vip, Address: addr, Weight: w}, nil)
}

func (c *Client) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://xlb"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("%w: nothing listens on %s (start it with 'xlb daemon' or give --socket)", ErrNotRunning, c.Socket)
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("connect to %s: permission denied: run as root or as a member of the socket group", c.Socket)
		}
		return fmt.Errorf("talk to the daemon on %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e Error
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
			return fmt.Errorf("daemon answered %s", resp.Status)
		}
		return errors.New(e.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode the daemon's answer: %w", err)
	}
	return nil
}

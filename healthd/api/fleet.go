package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/xlb-project/xlb/healthd/fleet"
)

// Paths of the fleet features: BGP announcements and the fleet check.
const (
	PathFleet       = "/v1/fleet"
	PathDrainSelf   = "/v1/drain-self"
	PathUndrainSelf = "/v1/undrain-self"
	// PathFleetHTTP serves the fleet report on the metrics listener, so
	// that fleet-check reaches balancers on other hosts (read-only).
	PathFleetHTTP = "/fleet"
)

// BGPStatus is the speaker's state in `xlb status`.
type BGPStatus struct {
	LocalAS  uint32       `json:"local_as"`
	RouterID string       `json:"router_id"`
	Sessions []BGPSession `json:"sessions"`
	// Addresses are the VIP addresses with what is announced and why.
	Addresses []BGPAddress `json:"addresses"`
	// Drained is true after drain-self (until undrain-self).
	Drained bool `json:"drained,omitempty"`
	// Leaving is true while the daemon leaves on shutdown.
	Leaving bool `json:"leaving,omitempty"`
	// GracefulShutdownUntil: routes carry GRACEFUL_SHUTDOWN until then,
	// then they are withdrawn.
	GracefulShutdownUntil time.Time `json:"graceful_shutdown_until,omitzero"`
	Announcements         uint64    `json:"announcements"`
	Withdrawals           uint64    `json:"withdrawals"`
	Error                 string    `json:"error,omitempty"` // of the last announcement change
}

// BGPSession is one peer's session.
type BGPSession struct {
	Peer     string   `json:"peer"`
	AS       uint32   `json:"as"`
	State    string   `json:"state"` // idle ... established
	Uptime   Duration `json:"uptime,omitempty"`
	HoldTime Duration `json:"hold_time,omitempty"` // negotiated
	Sent     uint64   `json:"sent"`                // routes advertised
}

// BGPAddress is one VIP address: announced or not, and why not.
type BGPAddress struct {
	Address          string `json:"address"`
	Announced        bool   `json:"announced"`
	GracefulShutdown bool   `json:"graceful_shutdown,omitempty"`
	Reason           string `json:"reason,omitempty"` // why it is not announced
}

// Fleet returns the balancer's fleet report: every VIP's table inputs and
// digests.
func (c *Client) Fleet() (fleet.Balancer, error) {
	var b fleet.Balancer
	err := c.do(http.MethodGet, PathFleet, nil, &b)
	return b, err
}

// DrainSelf makes the balancer leave its routers: GRACEFUL_SHUTDOWN first,
// then withdrawal; it keeps forwarding what still arrives.
func (c *Client) DrainSelf() error { return c.do(http.MethodPost, PathDrainSelf, struct{}{}, nil) }

// UndrainSelf announces the servable VIPs again after DrainSelf.
func (c *Client) UndrainSelf() error { return c.do(http.MethodPost, PathUndrainSelf, struct{}{}, nil) }

// FetchFleet reads a fleet report from a daemon's metrics listener, such
// as http://198.51.100.2:9437 (PathFleetHTTP is appended).
func FetchFleet(hc *http.Client, url string) (fleet.Balancer, error) {
	var b fleet.Balancer
	resp, err := hc.Get(strings.TrimRight(url, "/") + PathFleetHTTP)
	if err != nil {
		return b, fmt.Errorf("fetch fleet report: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("fetch fleet report from %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return b, fmt.Errorf("decode fleet report from %s: %w", url, err)
	}
	return b, nil
}

// Package statuspage serves the live status page of the daemon and of the
// proxy: one self-contained HTML page (HTML, CSS and JavaScript embedded in
// the binary, no external assets) that refreshes itself from a JSON
// snapshot. It is read-only: GET and HEAD only, and nothing it serves
// changes state. The daemon and the proxy each turn their state into a
// View; this package knows neither of them.
package statuspage

import (
	"time"
)

// View is one snapshot of a component's state.
type View struct {
	Kind        string    `json:"kind"`         // "l4" (daemon) or "l7" (proxy)
	Title       string    `json:"title"`        // e.g. "xlb daemon on lb1"
	GroupLabel  string    `json:"group_label"`  // "VIP" or "pool"
	MemberLabel string    `json:"member_label"` // "backend"
	Time        time.Time `json:"time"`
	Error       string    `json:"error,omitempty"` // the component's last error
	Groups      []Group   `json:"-"`               // all of them; the response pages them
	Drops       []Drop    `json:"drops,omitempty"`
	Routes      []Route   `json:"routes,omitempty"`
}

// Group is a VIP (daemon) or a pool (proxy) with its backends.
type Group struct {
	Name    string `json:"name"`
	Detail  string `json:"detail,omitempty"` // mode, hash, table size; algorithm
	Panic   bool   `json:"panic,omitempty"`
	Error   string `json:"error,omitempty"`
	Active  int    `json:"active"`  // members in admin state active
	Healthy int    `json:"healthy"` // of which healthy
	// Counters and rates over the members; the proxy counts requests,
	// the daemon packets and bytes.
	Packets     uint64   `json:"packets,omitempty"`
	Bytes       uint64   `json:"bytes,omitempty"`
	PacketRate  float64  `json:"packet_rate,omitempty"`
	ByteRate    float64  `json:"byte_rate,omitempty"`
	Requests    uint64   `json:"requests,omitempty"`
	RequestRate float64  `json:"request_rate,omitempty"`
	Members     []Member `json:"members"`
}

// Member is one backend of a group.
type Member struct {
	Address     string    `json:"address"`
	Weight      uint32    `json:"weight"`
	Admin       string    `json:"admin"`  // active | draining
	Health      string    `json:"health"` // healthy | unhealthy | unknown | unchecked
	HealthSince time.Time `json:"health_since,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Share       float64   `json:"share"` // of the group's traffic by design (table slots or weight), 0-1
	Packets     uint64    `json:"packets,omitempty"`
	Bytes       uint64    `json:"bytes,omitempty"`
	PacketRate  float64   `json:"packet_rate,omitempty"`
	ByteRate    float64   `json:"byte_rate,omitempty"`
	Requests    uint64    `json:"requests,omitempty"`
	RequestRate float64   `json:"request_rate,omitempty"`
	Failures    uint64    `json:"failures,omitempty"`
	InFlight    int64     `json:"in_flight,omitempty"`
	DrainUntil  time.Time `json:"drain_until,omitzero"`
	Breaker     string    `json:"breaker,omitempty"` // closed | open | half-open, where there is one
	// State is what the page shows first: draining, down, up or unknown.
	State string `json:"state"`
}

// Drop is one datapath exit that is not a forward.
type Drop struct {
	Reason  string  `json:"reason"`
	Packets uint64  `json:"packets"`
	Rate    float64 `json:"rate"`
	Passed  bool    `json:"passed"` // handed to the kernel, not dropped
	// What the datapath did with them, for people: "passed to the kernel",
	// "dropped", "answered with ICMP too big"; default from Passed.
	What string `json:"what,omitempty"`
}

// Route is one proxy route.
type Route struct {
	Name  string `json:"name"`
	Match string `json:"match,omitempty"`
	Pool  string `json:"pool,omitempty"`
	// Action is what a route without a pool does (respond, redirect).
	Action string `json:"action,omitempty"`
}

// MemberState derives the state the page shows first: an operator's
// drain wins over health, since it explains why no new traffic arrives.
func MemberState(admin, health string) string {
	switch {
	case admin == "draining":
		return "draining"
	case health == "unhealthy":
		return "down"
	case health == "healthy" || health == "unchecked":
		return "up"
	}
	return "unknown"
}

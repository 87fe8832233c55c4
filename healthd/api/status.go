package api

import (
	"time"
)

// Status is the whole running state, as `xlb status` shows it. The JSON
// field names are part of the CLI's stable interface.
type Status struct {
	Time  time.Time   `json:"time"` // of the snapshot, by the daemon's clock
	VIPs  []VIPStatus `json:"vips"`
	Error string      `json:"error,omitempty"` // of the last reconcile
	// Warnings are conditions found at start that need the operator (a
	// veth whose peer may hold forwarded packets back), with the fix.
	Warnings []string   `json:"warnings,omitempty"`
	BGP      *BGPStatus `json:"bgp,omitempty"` // nil without a bgp section
}

// HashText is the VIP's hash as shown to people: "5tuple", or
// "5tuple stateless" for a stateless VIP.
func (v VIPStatus) HashText() string {
	if v.Stateless {
		return v.Hash + " stateless"
	}
	return v.Hash
}

// VIPStatus is one VIP with its backends.
type VIPStatus struct {
	Address        string          `json:"address"`
	ID             uint32          `json:"id"`
	Mode           string          `json:"mode"`
	Hash           string          `json:"hash"`
	Stateless      bool            `json:"stateless,omitempty"`
	TableSize      uint32          `json:"table_size"`
	PanicThreshold int             `json:"panic_threshold"`
	Panic          bool            `json:"panic"`
	Active         int             `json:"active"`  // active backends
	Healthy        int             `json:"healthy"` // of which healthy
	DrainTimeout   Duration        `json:"drain_timeout"`
	Check          *CheckConfig    `json:"check,omitempty"`
	Packets        uint64          `json:"packets"`
	Bytes          uint64          `json:"bytes"`
	Error          string          `json:"error,omitempty"`
	Backends       []BackendStatus `json:"backends"`
}

// BackendStatus is one backend of a VIP.
type BackendStatus struct {
	Address     string    `json:"address"`
	ID          uint32    `json:"id"`
	Weight      uint32    `json:"weight"`
	Admin       string    `json:"admin"`
	Health      string    `json:"health"` // unknown | healthy | unhealthy | unchecked
	HealthSince time.Time `json:"health_since,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Check       string    `json:"check,omitempty"`
	UsableNew   bool      `json:"usable_new"`
	UsableEst   bool      `json:"usable_established"`
	NextHop     string    `json:"next_hop,omitempty"` // MAC
	NextHopErr  string    `json:"next_hop_error,omitempty"`
	Slots       int       `json:"slots"`
	Share       float64   `json:"share"` // of the table, 0-1
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	PacketRate  float64   `json:"packet_rate"` // per second, over the last sample
	ByteRate    float64   `json:"byte_rate"`
	DrainUntil  time.Time `json:"drain_until,omitzero"`
	// Damped: held down for flapping (Health is then unhealthy).
	Damped bool `json:"damped,omitempty"`
	// History holds the latest check results, oldest first.
	History []CheckResult `json:"history,omitempty"`
}

// Stats are the datapath counters: per VIP and the drop reasons.
type Stats struct {
	Time    time.Time         `json:"time"`
	Packets uint64            `json:"packets"` // forwarded, all VIPs
	Bytes   uint64            `json:"bytes"`
	VIPs    []VIPCounters     `json:"vips"`
	Drops   map[string]uint64 `json:"drops"`
	Tables  TableStats        `json:"tables"`
}

// VIPCounters are one VIP's counters.
type VIPCounters struct {
	Address string `json:"address"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// TableStats count the Maglev work.
type TableStats struct {
	Builds       uint64  `json:"builds"`        // tables computed (one per distinct backend set)
	Installs     uint64  `json:"installs"`      // tables written to the datapath
	Patches      uint64  `json:"patches"`       // of the installs, tables rewritten in place (moved slots only)
	LastDuration float64 `json:"last_duration"` // seconds, of the last reconcile that changed a table
}

// CheckResult is one health check result.
type CheckResult struct {
	Time    time.Time     `json:"time"`          // start, by the prober's clock
	Latency time.Duration `json:"latency"`       // real time the check took
	Err     string        `json:"err,omitempty"` // "" when the check passed
}

// AdminState is what an operator decided for a backend.
type AdminState string

// Admin states (DESIGN.md, Backend lifecycle). A removed backend leaves the
// state; there is no "removed" value.
const (
	Active   AdminState = "active"
	Draining AdminState = "draining"
)

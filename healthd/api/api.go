// Package api is the contract of the L4 daemon's Unix-socket API: its
// paths, the request and answer types (VIP and backend configuration,
// status, counters) with their validation, and a client. The CLI talks to
// the daemon through this package alone; the daemon (package healthd)
// serves it.
package api

// DefaultSocket is where the daemon serves the API unless configured
// otherwise.
const DefaultSocket = "/run/xlb/xlb.sock"

// API paths. Reading requests are GET, changing ones POST with a JSON body.
const (
	PathStatus         = "/v1/status"
	PathStats          = "/v1/stats"
	PathVIPAdd         = "/v1/vip/add"
	PathVIPRemove      = "/v1/vip/remove"
	PathBackendAdd     = "/v1/backend/add"
	PathBackendRemove  = "/v1/backend/remove"
	PathBackendDrain   = "/v1/backend/drain"
	PathBackendUndrain = "/v1/backend/undrain"
	PathBackendWeight  = "/v1/backend/weight"
)

// BackendRequest names a backend of a VIP, with the arguments of the
// request it is used in.
type BackendRequest struct {
	VIP     string         `json:"vip"`
	Address string         `json:"address,omitempty"`
	Backend *BackendConfig `json:"backend,omitempty"` // backend add
	Weight  uint32         `json:"weight,omitempty"`  // backend weight
	Timeout Duration       `json:"timeout,omitempty"` // backend drain; 0: the VIP's
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

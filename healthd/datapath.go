package healthd

import (
	"net"
	"net/netip"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
)

// Datapath is what the reconcile loop needs from the BPF maps. *loader.Datapath
// implements it; unit tests use healthdtest.MemDatapath.
type Datapath interface {
	PutVIP(k loader.VIPKey, v loader.VIP) error
	RemoveVIP(k loader.VIPKey) error
	PutBackend(id uint32, b loader.Backend) error
	RemoveBackend(id uint32) error
	// SetTable installs a whole table atomically; slot value 0 is empty.
	// A datapath that can also rewrite single slots in place implements
	// PatchTables (tablePatcher), which reconciles use when slots move.
	SetTable(vipID uint32, table []uint32) error
	BackendCounters(id uint32) (loader.Counters, error)
	// The datapath counts per backend only: a VIP's traffic is its
	// backends' counters plus the retired ones, which RetireBackend adds
	// a removed backend's counters to.
	RetiredCounters(vipID uint32) (loader.Counters, error)
	RetireBackend(vipID, backendID uint32) error
	Drops() (map[string]uint64, error)
}

// Prober runs health checks; the daemon sets one check per distinct
// (target, settings) and receives results through Daemon.HealthChanged.
type Prober interface {
	Set(id string, c HealthCheck) error
	Remove(id string)
}

// HealthCheck is the effective check of one backend.
type HealthCheck struct {
	Kind     string
	Target   netip.AddrPort
	Interval time.Duration // 0: the checker's default
	Timeout  time.Duration
	Rise     int
	Fall     int
	Path     string
	Host     string
	// StartHealthy starts the check healthy instead of unknown: used for
	// backends a restarted daemon finds in the tables it adopts.
	StartHealthy bool
}

// Resolver finds the next-hop MAC of a backend: the backend's own for L2 DSR
// (it must be on-link), the next hop towards it for IPIP. It must not block
// for long: an address not yet resolved returns an error (and may start a
// resolution whose result arrives as a neighbour change).
type Resolver interface {
	Resolve(addr netip.Addr, onLink bool) (net.HardwareAddr, error)
}

// Clock is the time source, replaced by a fake in tests.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f after d; the returned function cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// TableBuilder computes a Maglev table: for every slot, the index of the
// chosen backend in keys.
type TableBuilder func(keys []string, weights []uint32, size uint32) ([]uint32, error)

// Health of a backend, as the checker reports it.
const (
	HealthUnknown   = "unknown"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthUnchecked = "unchecked" // the VIP has no check: counts as healthy
)

func toLoaderKey(k api.VIPKey) loader.VIPKey {
	p := uint8(6)
	if k.Proto == api.UDP {
		p = 17
	}
	return loader.VIPKey{Addr: k.Addr, Port: k.Port, Proto: p}
}

package healthd

import (
	"net/netip"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
)

// dpState is what the daemon has written to the datapath, so a reconcile
// writes only differences and in the right order.
type dpState struct {
	vips      map[api.VIPKey]*dpVIP
	vipIDs    idAlloc
	backendID idAlloc
	tables    map[string][]uint32 // backend set → Maglev positions, shared by VIPs
}

type dpVIP struct {
	id       uint32
	vip      loader.VIP
	written  bool // PutVIP done
	tableKey string
	table    bool // a table was installed
	panic    bool
	healthy  int // active backends that are healthy
	active   int
	backends map[netip.Addr]*dpBackend
	slots    map[netip.Addr]int
	err      string // why the VIP is not (fully) installed
}

type dpBackend struct {
	id      uint32
	b       loader.Backend
	written bool
	err     string // e.g. next hop unresolved
	sample  *sample
}

func newDPState(maxVIPs, maxBackends uint32) dpState {
	if maxVIPs == 0 {
		maxVIPs = loader.MaxVIPs
	}
	if maxBackends == 0 {
		maxBackends = loader.MaxBackends
	}
	return dpState{
		vips:      map[api.VIPKey]*dpVIP{},
		vipIDs:    idAlloc{first: 0, limit: maxVIPs, used: map[uint32]bool{}},
		backendID: idAlloc{first: 1, limit: maxBackends, used: map[uint32]bool{}},
		tables:    map[string][]uint32{},
	}
}

func (s *dpState) sampleOf(k api.VIPKey, a netip.Addr) *sample {
	if v := s.vips[k]; v != nil {
		if b := v.backends[a]; b != nil {
			return b.sample
		}
	}
	return nil
}

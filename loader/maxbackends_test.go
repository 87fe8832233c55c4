package loader

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

func TestMaxBackendsOption(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 100000
	d, err := Load(Options{FlowTableSize: flowTableSizeForTests, MaxBackends: n, Verbose: true})
	if err != nil {
		t.Fatalf("load with %d backend IDs: %v", n, err)
	}
	t.Cleanup(func() { d.Close() })
	if got := d.MaxBackends(); got != n {
		t.Errorf("MaxBackends() = %d, want %d", got, n)
	}
	must(t, d.SetConfig(Config{SourceMAC: balancerMAC, OuterSource4: outer4}))
	mac := net.HardwareAddr{0x02, 0xbe, 0x01, 0x86, 0x9f, 0x42}
	must(t, d.PutBackend(n-1, Backend{Addr: netip.MustParseAddr("198.51.100.99"), MAC: mac, UsableNew: true}))
	must(t, d.PutVIP(VIPKey{vip4, 80, 6}, VIP{ID: 1, TableSize: tableSize}))
	must(t, d.SetTable(1, roundRobin(tableSize, n-1)))

	syn := tcpTo(vip4, client4, 80, testutil.TCPSyn)
	act, out, err := d.Program().Run(syn.Bytes())
	must(t, err)
	if act != ActionTX || !bytes.Equal(out[0:6], mac) {
		t.Errorf("syn: %s to %s, want XDP_TX to backend %d (%s)", act, net.HardwareAddr(out[0:6]), n-1, mac)
	}
	if c, err := d.BackendCounters(n - 1); err != nil || c.Packets != 1 {
		t.Errorf("backend %d counters %+v %v, want 1 packet", n-1, c, err)
	}
	table, err := d.Table(1)
	must(t, err)
	if table[0] != n-1 {
		t.Errorf("table slot 0 reads %d, want %d", table[0], n-1)
	}

	for name, err := range map[string]error{
		"put backend":      d.PutBackend(n, Backend{Addr: netip.MustParseAddr("198.51.100.98"), MAC: mac}),
		"remove backend":   d.RemoveBackend(n),
		"table backend id": d.SetTable(1, roundRobin(tableSize, n)),
	} {
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "want") {
			t.Errorf("%s with id %d: %v, want ErrInvalid naming the allowed range", name, n, err)
		}
	}
	if _, err := d.BackendCounters(n); !errors.Is(err, ErrInvalid) {
		t.Errorf("counters of backend %d: %v, want ErrInvalid", n, err)
	}
}

func TestMaxBackendsRange(t *testing.T) {
	for _, n := range []uint32{1, MaxMaxBackends + 1} {
		_, err := Load(Options{MaxBackends: n})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "max backends") {
			t.Errorf("load with max backends %d: %v, want ErrInvalid naming max backends", n, err)
		}
	}
}

func TestMaxBackendsPinMismatch(t *testing.T) {
	dir := pinDir(t)
	d, err := Load(Options{PinDir: dir, FlowTableSize: 4096})
	must(t, err)
	must(t, d.Close())
	_, err = Load(Options{PinDir: dir, FlowTableSize: 4096, MaxBackends: 2 * MaxBackends})
	if !errors.Is(err, ErrIncompatiblePin) || !strings.Contains(err.Error(), "xlb daemon --cleanup") {
		t.Errorf("adopt pins with another max backends: %v, want ErrIncompatiblePin saying to run xlb daemon --cleanup", err)
	}
	d, err = Load(Options{PinDir: dir, FlowTableSize: 4096, MaxBackends: MaxBackends})
	if err != nil {
		t.Fatalf("adopt pins with the same max backends: %v", err)
	}
	d.Close()
}

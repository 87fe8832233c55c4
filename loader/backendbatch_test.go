package loader

import (
	"errors"
	"net"
	"testing"

	"github.com/cilium/ebpf"
)

// gen reads the backend generation the datapath compares cached backend
// copies against.
func gen(t *testing.T, d *Datapath) uint32 {
	t.Helper()
	var c lbConfig
	must(t, d.objs.Settings.Lookup(uint32(0), &c))
	return c.Gen
}

// PutBackends writes every backend as PutBackend would, zeroes the counters
// of an ID that was free, and bumps the generation once.
func TestPutBackends(t *testing.T) {
	d := newTestDatapath(t)
	// ID 6 was free but holds counters of an earlier user: they must go.
	per := make([]lbCounters, ebpf.MustPossibleCPU())
	per[0] = lbCounters{Packets: 7, Bytes: 700}
	must(t, d.objs.BackendStats.Put(uint32(6), per))

	before := gen(t, d)
	drained := testBackend(2)
	drained.UsableNew = false
	six := testBackend(6)
	n, err := d.PutBackends([]uint32{2, 6}, []Backend{drained, six})
	if err != nil || n != 2 {
		t.Fatalf("PutBackends = %d, %v; want 2, nil", n, err)
	}
	if got := gen(t, d); got != before+1 {
		t.Fatalf("generation %d after the batch, want %d (one bump)", got, before+1)
	}
	for _, tt := range []struct {
		id        uint32
		b         Backend
		wantFlags uint8
	}{
		{2, drained, backendUsableEstablished},
		{6, six, backendUsableNew | backendUsableEstablished},
	} {
		var v lbBackend
		must(t, d.objs.Backends.Lookup(tt.id, &v))
		if v.Addr != addr16(tt.b.Addr) || net.HardwareAddr(v.Mac[:]).String() != tt.b.MAC.String() || v.Flags != tt.wantFlags {
			t.Errorf("backend %d = %+v, want %s %s flags %#x", tt.id, v, tt.b.Addr, tt.b.MAC, tt.wantFlags)
		}
	}
	c, err := d.BackendCounters(6)
	must(t, err)
	if c.Packets != 0 || c.Bytes != 0 {
		t.Errorf("counters of new backend 6 = %+v, want zero", c)
	}
}

// Bad arguments are refused before anything is written.
func TestPutBackendsRefuses(t *testing.T) {
	d := newTestDatapath(t)
	before := gen(t, d)
	var old lbBackend
	must(t, d.objs.Backends.Lookup(uint32(1), &old))
	changed := testBackend(1)
	changed.UsableNew = false
	noMAC := testBackend(3)
	noMAC.MAC = nil
	for name, tt := range map[string]struct {
		ids []uint32
		bs  []Backend
	}{
		"lengths differ": {[]uint32{1, 2}, []Backend{changed}},
		"id 0":           {[]uint32{1, 0}, []Backend{changed, testBackend(2)}},
		"id too large":   {[]uint32{1, d.maxBackends}, []Backend{changed, testBackend(2)}},
		"no mac":         {[]uint32{1, 3}, []Backend{changed, noMAC}},
		"no address":     {[]uint32{1, 3}, []Backend{changed, {MAC: backendMAC(3)}}},
	} {
		n, err := d.PutBackends(tt.ids, tt.bs)
		if !errors.Is(err, ErrInvalid) || n != 0 {
			t.Errorf("%s: PutBackends = %d, %v; want 0 and ErrInvalid", name, n, err)
		}
	}
	var now lbBackend
	must(t, d.objs.Backends.Lookup(uint32(1), &now))
	if now != old || gen(t, d) != before {
		t.Fatal("a refused batch wrote something")
	}
	if n, err := d.PutBackends(nil, nil); n != 0 || err != nil || gen(t, d) != before {
		t.Fatalf("empty batch = %d, %v, or bumped the generation", n, err)
	}
}

package healthd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/loader"
)

// IDFile, in the state directory, records which VIP and backend IDs the
// daemon gave out. Flows in the pinned flow table name backend IDs, so a
// restarted daemon must give every backend the ID it had: it reads this file
// and writes the same maps again (same content, nothing moves).
const IDFile = "ids.json"

type idFile struct {
	Version     int                                  `json:"version"`
	NextVIP     uint32                               `json:"next_vip"`
	NextBackend uint32                               `json:"next_backend"`
	VIPs        map[api.VIPKey]uint32                `json:"vips"`
	Backends    map[api.VIPKey]map[netip.Addr]uint32 `json:"backends"`
}

// vipLister is implemented by datapaths that can list their VIPs
// (loader.Datapath): VIPs there that the daemon does not know are removed.
type vipLister interface {
	VIPs() (map[loader.VIPKey]loader.VIP, error)
}

// tableReader is implemented by datapaths that can read a VIP's installed
// table back (loader.Datapath).
type tableReader interface {
	Table(vipID uint32) ([]uint32, error)
}

// warmBackendsLocked records which adopted backends the running tables
// name. Their health checks start healthy: a previous daemon found them
// usable, and a restart must not move established flows off them while the
// new checks are still counting up to rise.
func (d *Daemon) warmBackendsLocked() {
	r, ok := d.opts.Datapath.(tableReader)
	if !ok {
		return
	}
	d.warm = map[api.VIPKey]map[netip.Addr]bool{}
	for k, dv := range d.dp.vips {
		table, err := r.Table(dv.id)
		if err != nil {
			continue // no table: nothing was usable for new flows
		}
		inTable := map[uint32]bool{}
		for _, id := range table {
			inTable[id] = true
		}
		for a, db := range dv.backends {
			if inTable[db.id] {
				if d.warm[k] == nil {
					d.warm[k] = map[netip.Addr]bool{}
				}
				d.warm[k][a] = true
			}
		}
	}
}

// adoptLocked takes over the IDs a previous daemon gave out, and marks VIPs
// found in the datapath so that a reconcile removes those not desired.
func (d *Daemon) adoptLocked() error {
	if d.opts.StateDir != "" {
		b, err := os.ReadFile(filepath.Join(d.opts.StateDir, IDFile))
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read %s: %w", IDFile, err)
		default:
			var f idFile
			if err := json.Unmarshal(b, &f); err != nil {
				return fmt.Errorf("decode %s: %w", filepath.Join(d.opts.StateDir, IDFile), err)
			}
			for k, id := range f.VIPs {
				if id >= d.dp.vipIDs.limit || d.dp.vipIDs.used[id] {
					continue
				}
				dv := &dpVIP{id: id, backends: map[netip.Addr]*dpBackend{}, written: true, table: true, tableKey: "adopted"}
				d.dp.vipIDs.used[id] = true
				for a, bid := range f.Backends[k] {
					if bid == 0 || bid >= d.dp.backendID.limit || d.dp.backendID.used[bid] {
						continue
					}
					d.dp.backendID.used[bid] = true
					dv.backends[a] = &dpBackend{id: bid, written: true}
				}
				d.dp.vips[k] = dv
			}
			d.dp.vipIDs.next, d.dp.backendID.next = f.NextVIP, f.NextBackend
			d.warmBackendsLocked()
		}
	}
	l, ok := d.opts.Datapath.(vipLister)
	if !ok {
		return nil
	}
	vips, err := l.VIPs()
	if err != nil {
		return fmt.Errorf("list VIPs in the datapath: %w", err)
	}
	known := map[loader.VIPKey]bool{}
	for k := range d.dp.vips {
		known[toLoaderKey(k)] = true
	}
	for lk := range vips {
		if known[lk] {
			continue
		}
		// Unknown to us: remove it now (its table goes with it).
		if err := d.opts.Datapath.RemoveVIP(lk); err != nil && !errors.Is(err, loader.ErrNotFound) {
			return fmt.Errorf("remove stale VIP %s port %d: %w", lk.Addr, lk.Port, err)
		}
		d.log.Info("removed a VIP left in the datapath that no state names", "vip", lk.Addr.String(), "port", lk.Port)
	}
	return nil
}

// saveIDsLocked writes the ID file when IDs changed.
func (d *Daemon) saveIDsLocked() error {
	if d.opts.StateDir == "" || !d.dp.vipIDs.changed && !d.dp.backendID.changed {
		return nil
	}
	f := idFile{
		Version: 1, NextVIP: d.dp.vipIDs.next, NextBackend: d.dp.backendID.next,
		VIPs: map[api.VIPKey]uint32{}, Backends: map[api.VIPKey]map[netip.Addr]uint32{},
	}
	for k, dv := range d.dp.vips {
		f.VIPs[k] = dv.id
		bs := map[netip.Addr]uint32{}
		for a, db := range dv.backends {
			bs[a] = db.id
		}
		f.Backends[k] = bs
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode %s: %w", IDFile, err)
	}
	if err := writeAtomic(d.opts.StateDir, IDFile, b); err != nil {
		return err
	}
	d.dp.vipIDs.changed, d.dp.backendID.changed = false, false
	return nil
}

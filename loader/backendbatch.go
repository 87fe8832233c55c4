package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// PutBackends creates or replaces backends: ids[i] becomes bs[i], as
// PutBackend would, in one map update for all of them and one generation
// bump after the last (a health flip of a backend shared by 1,000 VIPs
// writes 1,000 backend IDs: 2 syscalls instead of 2,000). It writes in
// order and stops at the first error; it returns how many were written. An
// invalid argument is reported before anything is written.
func (d *Datapath) PutBackends(ids []uint32, bs []Backend) (int, error) {
	if len(ids) != len(bs) {
		return 0, fmt.Errorf("%w: %d backend ids but %d backends", ErrInvalid, len(ids), len(bs))
	}
	if len(ids) == 0 {
		return 0, nil
	}
	for i, id := range ids {
		if err := d.validBackendID(id); err != nil {
			return 0, err
		}
		if !bs[i].Addr.IsValid() || len(bs[i].MAC) != 6 {
			_, err := d.backendValue(id, bs[i]) // names the field
			return 0, err
		}
	}
	vals := make([]lbBackend, len(ids))
	for i, id := range ids {
		v, err := d.backendValue(id, bs[i])
		if err != nil {
			return 0, err
		}
		vals[i] = v
	}
	n, err := d.objs.Backends.BatchUpdate(ids, vals, &ebpf.BatchOptions{})
	n = min(max(n, 0), len(ids))
	for _, id := range ids[:n] {
		d.written[id/64].Or(uint64(1) << (id % 64))
	}
	if err != nil {
		err = fmt.Errorf("put backends %d..: %w", ids[n%len(ids)], err)
	}
	if n > 0 {
		if gerr := d.bumpGen(); gerr != nil && err == nil {
			err = gerr
		}
	}
	return n, err
}

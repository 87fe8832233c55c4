package healthd

import (
	"fmt"

	"github.com/xlb-project/xlb/loader"
)

// backendBatcher is implemented by datapaths that write many backends in
// one update (loader.Datapath): a flip of a backend shared by 1,000 VIPs
// writes 1,000 backend IDs. It writes in order, stops at the first error
// and returns how many it wrote.
type backendBatcher interface {
	PutBackends(ids []uint32, bs []loader.Backend) (int, error)
}

// putSteps writes the backend steps of all plans (those steps picks),
// in one batch when the datapath can. It returns the error of each plan
// whose steps were not all written.
func (d *Daemon) putSteps(plans []*vipPlan, steps func(*vipPlan) []backendStep) map[*vipPlan]error {
	failed := map[*vipPlan]error{}
	type owned struct {
		p *vipPlan
		s backendStep
	}
	var all []owned
	for _, p := range plans {
		for _, s := range steps(p) {
			all = append(all, owned{p, s})
		}
	}
	if len(all) == 0 {
		return failed
	}
	start := 0
	if batcher, ok := d.opts.Datapath.(backendBatcher); ok && len(all) > 1 {
		ids := make([]uint32, len(all))
		bs := make([]loader.Backend, len(all))
		for i, o := range all {
			ids[i], bs[i] = o.s.db.id, o.s.want
		}
		n, err := batcher.PutBackends(ids, bs)
		n = min(max(n, 0), len(all))
		for _, o := range all[:n] {
			o.s.db.b, o.s.db.written = o.s.want, true
		}
		if err == nil {
			return failed
		}
		// Write the rest one by one, to tell which VIPs they fail for.
		// When all were written and only the generation bump after them
		// failed, write the last again: its write bumps the generation.
		start = min(n, len(all)-1)
	}
	for _, o := range all[start:] {
		if failed[o.p] != nil {
			continue
		}
		if err := d.putBackend(o.s); err != nil {
			failed[o.p] = err
		}
	}
	return failed
}

// keepPlans returns the plans that did not fail, and adds the failures to
// errs.
func (d *Daemon) keepPlans(plans []*vipPlan, failed map[*vipPlan]error, errs *[]error) []*vipPlan {
	if len(failed) == 0 {
		return plans
	}
	kept := plans[:0]
	for _, p := range plans {
		if err := failed[p]; err != nil {
			*errs = append(*errs, fmt.Errorf("vip %s: %w", p.v.Key, err))
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

package healthd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

// namesOnlyPresent fails when a table of the datapath names a backend ID
// that is not in its backends map: a packet would find no backend.
func namesOnlyPresent(t *testing.T, r *rig) {
	t.Helper()
	r.dp.Lock()
	defer r.dp.Unlock()
	for vip, table := range r.dp.Tables {
		for s, id := range table {
			if _, ok := r.dp.Backends[id]; id != 0 && !ok {
				t.Fatalf("slot %d of VIP %d names backend %d, which is not there", s, vip, id)
			}
		}
	}
}

// A flip of a backend shared by every VIP writes its backend entries in
// one batch, in the order the ordering rule asks (usable before the tables
// name it, unusable after they stop naming it).
func TestFlipWritesBackendsInOneBatch(t *testing.T) {
	r, vips := healthySharedRig(t)
	for _, state := range []string{HealthUnhealthy, HealthHealthy} {
		batches, puts := r.dp.Ops["PutBackends"], r.dp.Ops["PutBackend"]
		r.setHealth("198.51.100.13", state)
		r.clock.fire()
		if r.d.lastErr != nil {
			t.Fatal(r.d.lastErr)
		}
		if got := r.dp.Ops["PutBackends"] - batches; got != 1 {
			t.Errorf("%s: %d backend batches, want 1", state, got)
		}
		if got := r.dp.Ops["PutBackend"] - puts; got != len(vips) {
			t.Errorf("%s: %d backend writes, want %d (one per VIP)", state, got, len(vips))
		}
		for _, vip := range vips {
			if got := r.backend(t, vip, "198.51.100.13"); got.Slots != 0 == (state == HealthUnhealthy) {
				t.Errorf("%s: .13 of %s holds %d slots", state, vip, got.Slots)
			}
		}
	}
}

// A backend write that fails in the batch fails its VIP only: that VIP
// keeps its table (which does not name the backend it could not make
// usable), the others move on, and the next reconcile catches up.
func TestFailedBackendWriteKeepsItsVIPTable(t *testing.T) {
	r, vips := healthySharedRig(t)
	r.setHealth("198.51.100.13", HealthUnhealthy)
	r.clock.fire()
	// Writes go in VIP order: fail the second VIP's, in the batch and
	// when written alone.
	calls := 0
	r.dp.Fail = func(op string) error {
		if op != "PutBackend" {
			return nil
		}
		if calls++; calls == 2 || calls == 3 {
			return errors.New("injected")
		}
		return nil
	}
	r.setHealth("198.51.100.13", HealthHealthy)
	r.clock.fire()
	r.dp.Fail = nil
	if err := r.d.lastErr; err == nil || !strings.Contains(err.Error(), vips[1]) || strings.Contains(err.Error(), vips[0]) || strings.Contains(err.Error(), vips[2]) {
		t.Fatalf("reconcile error %v, want one for %s only", err, vips[1])
	}
	for i, vip := range vips {
		slots := r.backend(t, vip, "198.51.100.13").Slots
		if (i == 1) != (slots == 0) {
			t.Errorf("%s: .13 holds %d slots", vip, slots)
		}
	}
	namesOnlyPresent(t, r)
	r.d.Refresh()
	r.clock.fire()
	if r.d.lastErr != nil {
		t.Fatal(r.d.lastErr)
	}
	if slots := r.backend(t, vips[1], "198.51.100.13").Slots; slots == 0 {
		t.Fatal("the failed VIP did not catch up")
	}
}

// A table that could not be rewritten (a patch failing half way through
// the VIPs of a change) keeps naming a backend leaving every VIP: that
// backend must stay in the backends map until no table names it, or its
// slots would forward to nothing.
func TestFailedPatchKeepsLeavingBackend(t *testing.T) {
	r, vips := healthySharedRig(t)
	gone := netip.MustParseAddr("198.51.100.16")
	patches := 0
	r.dp.Fail = func(op string) error {
		if op == "PatchTable" {
			if patches++; patches == 2 {
				return errors.New("injected")
			}
		}
		return nil
	}
	for _, vip := range vips {
		err := r.d.RemoveBackend(mustKey(t, vip), gone)
		if err != nil && strings.Contains(err.Error(), "ordering rule") {
			t.Fatalf("remove .16 from %s: %v", vip, err)
		}
		namesOnlyPresent(t, r)
	}
	r.dp.Fail = nil
	if patches < 2 {
		t.Fatalf("%d patches: the injected failure never happened", patches)
	}
	// Whatever failed was rolled back: each VIP has .16 in its table and
	// its backends map, or in neither.
	for _, vip := range vips {
		st := r.vip(t, vip)
		has := slices.ContainsFunc(st.Backends, func(b api.BackendStatus) bool { return b.Address == gone.String() })
		if has && r.backend(t, vip, gone.String()).Slots == 0 {
			t.Errorf("%s: .16 kept but out of the table", vip)
		}
	}
	namesOnlyPresent(t, r)
}

// A reconcile that reads only the backends whose health changed (the VIP's
// memo) writes and reports exactly what one reading every backend does: two
// daemons, one with the memo off, go through the same random health flips
// (panic included), lost, found and changed next hops, drains and injected
// write failures; their datapaths and backend status stay equal after
// every step.
func TestMemoReconcileMatchesFullWalk(t *testing.T) {
	yaml, vips := sharedSet(4)
	rigs := []*rig{newRig(t, yaml), newRig(t, yaml)}
	rigs[1].d.noMemo = true
	rnd := rand.New(rand.NewPCG(16, 6))
	addr := func(b int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", b)) }
	states := []string{HealthHealthy, HealthUnhealthy, HealthUnknown}
	for _, r := range rigs {
		for b := 11; b <= 16; b++ {
			r.setHealth(addr(b).String(), HealthHealthy)
		}
		r.clock.fire()
	}
	missing := 0 // the backend whose next hop is gone, at most one
	for step := range 600 {
		b := 11 + rnd.IntN(6)
		vip := mustKey(t, vips[rnd.IntN(len(vips))])
		action := rnd.IntN(20)
		state := states[rnd.IntN(len(states))]
		failAt := 0
		if rnd.IntN(8) == 0 {
			failAt = 1 + rnd.IntN(3) // the nth write fails, in both
		}
		var what string
		switch {
		case action < 14:
			what = fmt.Sprintf("health of .%d: %s", b, state)
		case action < 16:
			if missing == 0 {
				missing = b
				what = fmt.Sprintf("next hop of .%d lost", b)
			} else {
				what = fmt.Sprintf("next hop of .%d found", missing)
				b, missing = missing, 0
			}
		case action == 16:
			what = fmt.Sprintf("next hop of .%d changed", b)
		case action == 17:
			what = fmt.Sprintf("drain .%d", b)
		case action == 18:
			what = fmt.Sprintf("undrain .%d", b)
		default:
			what = "refresh"
		}
		for _, r := range rigs {
			writes := 0
			r.dp.Fail = func(op string) error {
				if op == "PutBackend" || op == "PatchTable" {
					if writes++; writes == failAt {
						return errors.New("injected")
					}
				}
				return nil
			}
			switch {
			case action < 14:
				r.setHealth(addr(b).String(), state)
				r.clock.fire()
			case action < 17:
				r.res.mu.Lock()
				if action == 16 {
					r.res.shift[addr(b)]++
				} else {
					r.res.missing[addr(b)] = missing == b
				}
				r.res.mu.Unlock()
				r.d.Refresh()
				r.clock.fire()
			case action == 17:
				_ = r.d.Drain(vip, addr(b), time.Hour)
			case action == 18:
				_ = r.d.Undrain(vip, addr(b))
			default:
				r.d.Refresh()
				r.clock.fire()
			}
			r.dp.Fail = nil
		}
		a, c := rigs[0], rigs[1]
		a.dp.Lock()
		c.dp.Lock()
		same := reflect.DeepEqual(a.dp.Backends, c.dp.Backends) && reflect.DeepEqual(a.dp.Tables, c.dp.Tables)
		c.dp.Unlock()
		a.dp.Unlock()
		if !same {
			t.Fatalf("step %d (%s): the datapaths differ", step, what)
		}
		if sa, sc := backendStatus(a), backendStatus(c); !reflect.DeepEqual(sa, sc) {
			t.Fatalf("step %d (%s): status differs:\n%v\n%v", step, what, sa, sc)
		}
	}
	// Most pairs were not read: the test tested the memo.
	if skips, pairs := rigs[0].d.stats.memoSkips, uint64(600*len(vips)*6); skips < pairs/5 {
		t.Fatalf("the memo spared %d of about %d pair reads: the test tested little", skips, pairs)
	}
}

// backendStatus is what the daemon reports of each backend that a
// reconcile decides.
func backendStatus(r *rig) []string {
	var out []string
	for _, v := range r.d.Status().VIPs {
		for _, b := range v.Backends {
			out = append(out, fmt.Sprintf("%s %s id=%d new=%v est=%v hop=%s hoperr=%q slots=%d err=%q", v.Address, b.Address, b.ID, b.UsableNew, b.UsableEst, b.NextHop, b.NextHopErr, b.Slots, b.LastError))
		}
	}
	return out
}

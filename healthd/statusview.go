package healthd

import (
	"fmt"
	"os"
	"slices"

	"github.com/xlb-project/xlb/internal/statuspage"
	"github.com/xlb-project/xlb/loader"
)

// StatusView is the daemon's state for the status page: every VIP with its
// backends, and the datapath's exits that are not forwards.
func (d *Daemon) StatusView() statuspage.View {
	st := d.Status()
	host, _ := os.Hostname()
	v := statuspage.View{
		Kind: "l4", Title: "xlb daemon", GroupLabel: "VIP", MemberLabel: "backend",
		Time: st.Time, Error: st.Error, Groups: make([]statuspage.Group, 0, len(st.VIPs)),
	}
	if host != "" {
		v.Title += " on " + host
	}
	for _, vip := range st.VIPs {
		g := statuspage.Group{
			Name:   vip.Address,
			Detail: fmt.Sprintf("%s, %s hash, table %d", vip.Mode, vip.Hash, vip.TableSize),
			Panic:  vip.Panic, Error: vip.Error, Active: vip.Active, Healthy: vip.Healthy,
			Packets: vip.Packets, Bytes: vip.Bytes,
			Members: make([]statuspage.Member, 0, len(vip.Backends)),
		}
		if vip.Stateless {
			g.Detail += ", stateless"
		}
		for _, b := range vip.Backends {
			lastErr := b.LastError
			if lastErr == "" && b.NextHopErr != "" {
				lastErr = "next hop: " + b.NextHopErr
			}
			g.Members = append(g.Members, statuspage.Member{
				Address: b.Address, Weight: b.Weight, Admin: b.Admin, Health: b.Health,
				HealthSince: b.HealthSince, LastError: lastErr, Share: b.Share,
				Packets: b.Packets, Bytes: b.Bytes, PacketRate: b.PacketRate, ByteRate: b.ByteRate,
				DrainUntil: b.DrainUntil, State: statuspage.MemberState(b.Admin, b.Health),
			})
		}
		v.Groups = append(v.Groups, g)
	}
	if drops, err := d.drops(); err == nil {
		for i, reason := range loader.ExitReasons {
			if n, ok := drops[reason]; ok {
				d := statuspage.Drop{Reason: reason, Packets: n, Passed: i < loader.PassingExits, What: "dropped"}
				switch {
				case d.Passed:
					d.What = "passed to the kernel"
				case reason == "icmp_too_big":
					d.What = "answered with ICMP too big"
				}
				v.Drops = append(v.Drops, d)
			}
		}
		for reason, n := range drops { // any the loader does not name
			if !slices.Contains(loader.ExitReasons, reason) {
				v.Drops = append(v.Drops, statuspage.Drop{Reason: reason, Packets: n})
			}
		}
	} else if v.Error == "" {
		v.Error = "read drop counters: " + err.Error()
	}
	return v
}

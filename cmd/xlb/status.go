package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

func statusCommand() *command {
	var (
		sock socketFlag
		out  output
	)
	return &command{
		name:     "status",
		summary:  "show every VIP (with panic state) and its backends",
		usage:    "[-o table|json]",
		examples: "  xlb status\n  xlb status -o json | jq '.vips[].backends[] | select(.health != \"healthy\")'",
		flags:    func(fs *pflag.FlagSet) { out.register(fs); sock.register(fs) },
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			st, err := sock.client().Status()
			if err != nil {
				return err
			}
			return out.print(io.out, st, func(t *table) {
				statusTable(t, st)
				bgpTable(t, st.BGP)
			})
		},
	}
}

// statusTable prints one line per VIP followed by its backends. A line
// without tabs ends tabwriter's column blocks, so each VIP aligns its own.
func statusTable(t *table, st api.Status) {
	if st.Error != "" {
		fmt.Fprintf(t.w, "error: %s\n", st.Error)
	}
	for _, w := range st.Warnings {
		fmt.Fprintf(t.w, "warning: %s\n", w)
	}
	if len(st.VIPs) == 0 {
		fmt.Fprintln(t.w, "no VIPs")
	}
	for i, v := range st.VIPs {
		if i > 0 {
			fmt.Fprintln(t.w)
		}
		p := "no"
		if v.Panic {
			p = "YES"
		}
		fmt.Fprintf(t.w, "VIP %s  mode %s  hash %s  table %d  healthy %d/%d  panic %s (threshold %d%%)  packets %d  bytes %d\n",
			v.Address, v.Mode, v.HashText(), v.TableSize, v.Healthy, v.Active, p, v.PanicThreshold, v.Packets, v.Bytes)
		if v.Error != "" {
			fmt.Fprintf(t.w, "  error: %s\n", v.Error)
		}
		if len(v.Backends) == 0 {
			fmt.Fprintln(t.w, "  no backends")
			continue
		}
		t.row("  BACKEND", "WEIGHT", "ADMIN", "HEALTH", "SINCE", "SHARE", "PACKETS", "BYTES", "PPS", "BPS", "LAST ERROR")
		for _, b := range v.Backends {
			admin := b.Admin
			if b.Admin == string(api.Draining) {
				admin += " (" + ago(b.DrainUntil, st.Time) + " left)"
			}
			t.row("  "+b.Address, strconv.Itoa(int(b.Weight)), admin, b.Health, ago(st.Time, b.HealthSince),
				percent(b.Share), strconv.FormatUint(b.Packets, 10), strconv.FormatUint(b.Bytes, 10),
				rate(b.PacketRate), rate(b.ByteRate*8), orDash(firstOf(b.NextHopErr, b.LastError)))
		}
	}
}

// bgpTable prints the BGP sessions and what is announced, after the VIPs.
func bgpTable(t *table, b *api.BGPStatus) {
	if b == nil {
		return
	}
	state := "serving"
	switch {
	case b.Leaving:
		state = "leaving"
	case b.Drained:
		state = "drained (xlb undrain-self to undo)"
	}
	fmt.Fprintf(t.w, "\nBGP local AS %d  router id %s  %s  announcements %d  withdrawals %d\n",
		b.LocalAS, b.RouterID, state, b.Announcements, b.Withdrawals)
	if !b.GracefulShutdownUntil.IsZero() {
		fmt.Fprintf(t.w, "  GRACEFUL_SHUTDOWN until %s, then withdrawn\n", b.GracefulShutdownUntil.Format(time.TimeOnly))
	}
	if b.Error != "" {
		fmt.Fprintf(t.w, "  error: %s\n", b.Error)
	}
	t.row("  PEER", "AS", "STATE", "UP", "HOLD", "SENT")
	for _, s := range b.Sessions {
		t.row("  "+s.Peer, strconv.FormatUint(uint64(s.AS), 10), s.State, orDash(durationOrEmpty(s.Uptime)),
			orDash(durationOrEmpty(s.HoldTime)), strconv.FormatUint(s.Sent, 10))
	}
	fmt.Fprintln(t.w)
	t.row("  ADDRESS", "ANNOUNCED", "WHY NOT")
	for _, a := range b.Addresses {
		ann := "no"
		switch {
		case a.Announced && a.GracefulShutdown:
			ann = "yes, GRACEFUL_SHUTDOWN"
		case a.Announced:
			ann = "yes"
		}
		t.row("  "+a.Address, ann, orDash(a.Reason))
	}
}

func durationOrEmpty(d api.Duration) string {
	if d == 0 {
		return ""
	}
	return time.Duration(d).String()
}

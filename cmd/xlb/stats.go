package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

func statsCommand() *command {
	var (
		sock     socketFlag
		out      output
		watch    bool
		interval time.Duration
	)
	return &command{
		name:    "stats",
		summary: "show the datapath counters and drop reasons",
		usage:   "[--watch [--interval D]] [-o table|json]",
		examples: "  xlb stats\n  xlb stats --watch --interval 2s\n" +
			"  xlb stats -o json | jq .drops",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVarP(&watch, "watch", "w", false, "print again every interval until interrupted, with rates")
			fs.DurationVar(&interval, "interval", time.Second, "time between two prints with --watch")
			out.register(fs)
			sock.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if interval <= 0 {
				return usageErrorf("--interval %s: allowed is a positive duration", interval)
			}
			c := sock.client()
			st, err := c.Stats()
			if err != nil {
				return err
			}
			if err := out.print(io.out, st, func(t *table) { statsTable(t, st, nil) }); err != nil || !watch {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
				prev := st
				if st, err = c.Stats(); err != nil {
					return err
				}
				if !out.json {
					fmt.Fprintln(io.out)
				}
				if err := out.print(io.out, st, func(t *table) { statsTable(t, st, &prev) }); err != nil {
					return err
				}
			}
		},
	}
}

func statsTable(t *table, st api.Stats, prev *api.Stats) {
	dt := 0.0
	if prev != nil {
		dt = st.Time.Sub(prev.Time).Seconds()
	}
	perSec := func(now, before uint64) string {
		if dt <= 0 || now < before {
			return "-"
		}
		return rate(float64(now-before) / dt)
	}
	old := map[string]api.VIPCounters{}
	if prev != nil {
		for _, v := range prev.VIPs {
			old[v.Address] = v
		}
	}
	t.header("VIP", "PACKETS", "BYTES", "PPS", "BPS")
	for _, v := range st.VIPs {
		o := old[v.Address]
		t.row(v.Address, strconv.FormatUint(v.Packets, 10), strconv.FormatUint(v.Bytes, 10),
			perSec(v.Packets, o.Packets), perSec(v.Bytes*8, o.Bytes*8))
	}
	var pp, pb uint64
	if prev != nil {
		pp, pb = prev.Packets, prev.Bytes
	}
	t.row("total", strconv.FormatUint(st.Packets, 10), strconv.FormatUint(st.Bytes, 10), perSec(st.Packets, pp), perSec(st.Bytes*8, pb*8))
	fmt.Fprintln(t.w)
	t.header("DROP REASON", "PACKETS", "PPS")
	reasons := make([]string, 0, len(st.Drops))
	for r := range st.Drops {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		var before uint64
		if prev != nil {
			before = prev.Drops[r]
		}
		t.row(r, strconv.FormatUint(st.Drops[r], 10), perSec(st.Drops[r], before))
	}
	fmt.Fprintln(t.w)
	fmt.Fprintf(t.w, "tables: %d built, %d installed, last reconcile %.3fs\n", st.Tables.Builds, st.Tables.Installs, st.Tables.LastDuration)
}

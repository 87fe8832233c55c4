package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

func vipCommand() *command {
	return &command{
		name:    "vip",
		summary: "add, remove and list virtual IPs",
		sub:     []*command{vipAddCommand(), vipRemoveCommand(), vipListCommand()},
	}
}

func vipAddCommand() *command {
	var (
		sock    socketFlag
		c       api.VIPConfig
		panicT  int
		drain   string
		changed func(string) bool
	)
	return &command{
		name:    "add",
		summary: "add a VIP (persisted in the daemon's runtime overlay)",
		usage:   "ADDR:PORT/PROTO [--mode ipip|l2dsr] [--table-size PRIME] [--hash 5tuple|src-ip] [--stateless] [--panic-threshold PCT] [--drain-timeout D]",
		examples: "  xlb vip add 203.0.113.10:80/tcp\n" +
			"  xlb vip add [2001:db8:f::10]:443/tcp --mode ipip --table-size 4093\n" +
			"  xlb vip add 203.0.113.10:*/udp --hash src-ip --panic-threshold 0\n" +
			"  xlb vip add 203.0.113.53:53/udp --stateless",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&c.Mode, "mode", "ipip", "forwarding: ipip (encapsulate) or l2dsr (rewrite MACs; backends on-link)")
			fs.Uint32Var(&c.TableSize, "table-size", api.DefaultTableSize, "Maglev table size: 251, 4093 or 65537")
			fs.StringVar(&c.Hash, "hash", "5tuple", "flow hash: 5tuple or src-ip (a client sticks to one backend)")
			fs.BoolVar(&c.Stateless, "stateless", false, "UDP only: keep no flow state, place each datagram by the table (DNS-like traffic)")
			fs.IntVar(&panicT, "panic-threshold", api.DefaultPanicThreshold, "percent of active backends that must be healthy, else all serve; 0 disables")
			fs.StringVar(&drain, "drain-timeout", "30s", "default drain timeout of its backends")
			sock.register(fs)
			changed = fs.Changed
		},
		run: func(io *stdio, args []string) error {
			if err := exactArgs(args, 1, "ADDR:PORT/PROTO"); err != nil {
				return err
			}
			vip, err := vipArg(args[0])
			if err != nil {
				return err
			}
			c.Address = vip
			if changed("panic-threshold") {
				c.PanicThreshold = &panicT
			}
			d, err := parseDuration("--drain-timeout", drain)
			if err != nil {
				return err
			}
			c.DrainTimeout = d
			if err := c.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			if err := sock.client().AddVIP(c); err != nil {
				return err
			}
			fmt.Fprintf(io.out, "added vip %s\n", vip)
			return nil
		},
	}
}

func vipRemoveCommand() *command {
	var sock socketFlag
	return &command{
		name:     "remove",
		summary:  "remove a VIP and all its backends at once",
		usage:    "VIP",
		examples: "  xlb vip remove 203.0.113.10:80/tcp",
		flags:    sock.register,
		run: func(io *stdio, args []string) error {
			if err := exactArgs(args, 1, "VIP"); err != nil {
				return err
			}
			vip, err := vipArg(args[0])
			if err != nil {
				return err
			}
			if err := sock.client().RemoveVIP(vip); err != nil {
				return err
			}
			fmt.Fprintf(io.out, "removed vip %s\n", vip)
			return nil
		},
	}
}

// vipRow is one VIP in `xlb vip list -o json`.
type vipRow struct {
	Address        string `json:"address"`
	Mode           string `json:"mode"`
	Hash           string `json:"hash"`
	Stateless      bool   `json:"stateless"`
	TableSize      uint32 `json:"table_size"`
	PanicThreshold int    `json:"panic_threshold"`
	Panic          bool   `json:"panic"`
	Backends       int    `json:"backends"`
	Active         int    `json:"active"`
	Healthy        int    `json:"healthy"`
	Packets        uint64 `json:"packets"`
	Bytes          uint64 `json:"bytes"`
}

func vipListCommand() *command {
	var (
		sock socketFlag
		out  output
	)
	return &command{
		name:     "list",
		summary:  "list the VIPs",
		usage:    "[-o table|json]",
		examples: "  xlb vip list\n  xlb vip list -o json",
		flags:    func(fs *pflag.FlagSet) { out.register(fs); sock.register(fs) },
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			st, err := sock.client().Status()
			if err != nil {
				return err
			}
			rows := []vipRow{}
			for _, v := range st.VIPs {
				rows = append(rows, vipRow{v.Address, v.Mode, v.Hash, v.Stateless, v.TableSize, v.PanicThreshold, v.Panic, len(v.Backends), v.Active, v.Healthy, v.Packets, v.Bytes})
			}
			return out.print(io.out, rows, func(t *table) {
				t.header("VIP", "MODE", "HASH", "TABLE", "BACKENDS", "HEALTHY", "PANIC", "PACKETS", "BYTES")
				for _, r := range rows {
					t.row(r.Address, r.Mode, api.VIPStatus{Hash: r.Hash, Stateless: r.Stateless}.HashText(), strconv.Itoa(int(r.TableSize)), strconv.Itoa(r.Backends),
						fmt.Sprintf("%d/%d", r.Healthy, r.Active), panicText(r.Panic, r.PanicThreshold),
						strconv.FormatUint(r.Packets, 10), strconv.FormatUint(r.Bytes, 10))
				}
			})
		},
	}
}

func panicText(p bool, threshold int) string {
	switch {
	case threshold == 0:
		return "off"
	case p:
		return fmt.Sprintf("PANIC(<%d%%)", threshold)
	}
	return fmt.Sprintf("no(<%d%%)", threshold)
}

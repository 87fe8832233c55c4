package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

func backendCommand() *command {
	return &command{
		name:    "backend",
		summary: "add, drain, remove, reweight and list the backends of a VIP",
		sub: []*command{
			backendAddCommand(), backendDrainCommand(), backendUndrainCommand(),
			backendRemoveCommand(), backendWeightCommand(), backendListCommand(),
		},
	}
}

func parseDuration(flag, s string) (api.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usageErrorf("%s %q: allowed is a duration such as 30s or 500ms", flag, s)
	}
	return api.Duration(d), nil
}

func backendAddCommand() *command {
	var (
		sock              socketFlag
		weight            uint32
		check             string
		port              uint16
		interval, timeout string
		rise, fall        int
		changed           func(string) bool
	)
	return &command{
		name:    "add",
		summary: "add a backend to a VIP",
		usage:   "VIP ADDR [--weight N] [--check tcp|http:PATH|https:PATH] [--check-port P] [--interval D] [--timeout D] [--rise N] [--fall N]",
		examples: "  xlb backend add 203.0.113.10:80/tcp 198.51.100.11\n" +
			"  xlb backend add 203.0.113.10:80/tcp 198.51.100.12 --weight 2 --check http:/healthz --check-port 8080\n" +
			"  xlb backend add [2001:db8:f::10]:443/tcp 2001:db8:1::11 --check tcp --interval 1s --fall 2",
		flags: func(fs *pflag.FlagSet) {
			fs.Uint32Var(&weight, "weight", 1, fmt.Sprintf("share of new flows relative to the others, 1-%d", api.MaxWeight))
			fs.StringVar(&check, "check", "", "health check: tcp, http:PATH or https:PATH (default: the VIP's)")
			fs.Uint16Var(&port, "check-port", 0, "port the check connects to (default: the VIP's)")
			fs.StringVar(&interval, "interval", "", "time between checks (default 2s)")
			fs.StringVar(&timeout, "timeout", "", "a check not done by then fails (default 1s)")
			fs.IntVar(&rise, "rise", 0, "passes that make it healthy (default 2)")
			fs.IntVar(&fall, "fall", 0, "failures that make it unhealthy (default 3)")
			sock.register(fs)
			changed = fs.Changed
		},
		run: func(io *stdio, args []string) error {
			if err := exactArgs(args, 2, "VIP ADDR"); err != nil {
				return err
			}
			vip, addr, err := vipBackendArgs(args)
			if err != nil {
				return err
			}
			if weight < 1 || weight > api.MaxWeight {
				return usageErrorf("--weight %d: allowed are 1-%d", weight, api.MaxWeight)
			}
			b := api.BackendConfig{Address: addr, Weight: weight}
			var cc api.CheckConfig
			if check != "" {
				kind, path, _ := strings.Cut(check, ":")
				switch kind {
				case "tcp":
					if path != "" {
						return usageErrorf("--check %q: a tcp check takes no path", check)
					}
				case "http", "https":
					if path != "" && !strings.HasPrefix(path, "/") {
						return usageErrorf("--check %q: the path must start with /", check)
					}
				default:
					return usageErrorf("--check %q: allowed are tcp, http:PATH, https:PATH", check)
				}
				cc.Kind, cc.Path = kind, path
			}
			cc.Port, cc.Rise, cc.Fall = port, rise, fall
			if cc.Interval, err = parseDuration("--interval", interval); err != nil {
				return err
			}
			if cc.Timeout, err = parseDuration("--timeout", timeout); err != nil {
				return err
			}
			if check != "" || changed("check-port") || interval != "" || timeout != "" || rise != 0 || fall != 0 {
				b.Check = &cc
			}
			if err := sock.client().AddBackend(vip, b); err != nil {
				return err
			}
			fmt.Fprintf(io.out, "added backend %s to vip %s\n", addr, vip)
			return nil
		},
	}
}

// vipBackendArgs checks the VIP ADDR arguments every backend command starts
// with.
func vipBackendArgs(args []string) (vip, addr string, err error) {
	if vip, err = vipArg(args[0]); err != nil {
		return "", "", err
	}
	if addr, err = backendArg(args[1]); err != nil {
		return "", "", err
	}
	return vip, addr, nil
}

// backendVerb builds the commands that act on one backend of a VIP.
func backendVerb(name, summary, extraUsage, examples string, flags func(fs *pflag.FlagSet),
	nExtra int, do func(c *api.Client, vip, addr string, extra []string) (string, error)) *command {
	var sock socketFlag
	return &command{
		name:     name,
		summary:  summary,
		usage:    strings.TrimSpace("VIP ADDR " + extraUsage),
		examples: examples,
		flags: func(fs *pflag.FlagSet) {
			if flags != nil {
				flags(fs)
			}
			sock.register(fs)
		},
		run: func(io *stdio, args []string) error {
			names := "VIP ADDR"
			if nExtra > 0 {
				names += " " + strings.Fields(extraUsage)[0]
			}
			if err := exactArgs(args, 2+nExtra, names); err != nil {
				return err
			}
			vip, addr, err := vipBackendArgs(args)
			if err != nil {
				return err
			}
			msg, err := do(sock.client(), vip, addr, args[2:])
			if err != nil {
				return err
			}
			fmt.Fprintln(io.out, msg)
			return nil
		},
	}
}

func backendDrainCommand() *command {
	var timeout string
	return backendVerb("drain", "stop new flows to a backend; established ones continue until the timeout or until idle",
		"[--timeout D]",
		"  xlb backend drain 203.0.113.10:80/tcp 198.51.100.11\n  xlb backend drain 203.0.113.10:80/tcp 198.51.100.11 --timeout 5m",
		func(fs *pflag.FlagSet) {
			fs.StringVar(&timeout, "timeout", "", "remove the backend after this long at the latest (default: the VIP's drain_timeout)")
		}, 0,
		func(c *api.Client, vip, addr string, _ []string) (string, error) {
			d, err := parseDuration("--timeout", timeout)
			if err != nil {
				return "", err
			}
			return "draining backend " + addr + " of vip " + vip, c.Drain(vip, addr, time.Duration(d))
		})
}

func backendUndrainCommand() *command {
	return backendVerb("undrain", "make a draining backend active again", "",
		"  xlb backend undrain 203.0.113.10:80/tcp 198.51.100.11", nil, 0,
		func(c *api.Client, vip, addr string, _ []string) (string, error) {
			return "backend " + addr + " of vip " + vip + " is active", c.Undrain(vip, addr)
		})
}

func backendRemoveCommand() *command {
	return backendVerb("remove", "remove a backend at once (established flows move; drain first to keep them)", "",
		"  xlb backend remove 203.0.113.10:80/tcp 198.51.100.11", nil, 0,
		func(c *api.Client, vip, addr string, _ []string) (string, error) {
			return "removed backend " + addr + " of vip " + vip, c.RemoveBackend(vip, addr)
		})
}

func backendWeightCommand() *command {
	return backendVerb("weight", "change a backend's weight", "N",
		"  xlb backend weight 203.0.113.10:80/tcp 198.51.100.11 3", nil, 1,
		func(c *api.Client, vip, addr string, extra []string) (string, error) {
			w, err := weightArg(extra[0])
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("backend %s of vip %s has weight %d", addr, vip, w), c.SetWeight(vip, addr, w)
		})
}

// backendRow is one backend in `xlb backend list -o json`.
type backendRow struct {
	VIP string `json:"vip"`
	api.BackendStatus
}

func backendListCommand() *command {
	var (
		sock socketFlag
		out  output
	)
	return &command{
		name:     "list",
		summary:  "list the backends of one VIP or of all",
		usage:    "[VIP] [-o table|json]",
		examples: "  xlb backend list\n  xlb backend list 203.0.113.10:80/tcp -o json",
		flags:    func(fs *pflag.FlagSet) { out.register(fs); sock.register(fs) },
		run: func(io *stdio, args []string) error {
			if len(args) > 1 {
				return usageErrorf("unexpected argument %q", args[1])
			}
			var only string
			if len(args) == 1 {
				v, err := vipArg(args[0])
				if err != nil {
					return err
				}
				only = v
			}
			st, err := sock.client().Status()
			if err != nil {
				return err
			}
			rows := []backendRow{}
			found := only == ""
			for _, v := range st.VIPs {
				if only != "" && v.Address != only {
					continue
				}
				found = true
				for _, b := range v.Backends {
					rows = append(rows, backendRow{v.Address, b})
				}
			}
			if !found {
				return fmt.Errorf("vip %s: unknown VIP", only)
			}
			return out.print(io.out, rows, func(t *table) {
				t.header("VIP", "BACKEND", "WEIGHT", "ADMIN", "HEALTH", "SINCE", "CHECKS", "SHARE", "NEXT HOP", "LAST ERROR")
				for _, r := range rows {
					health := r.Health
					if r.Damped {
						health += " (damped)"
					}
					t.row(r.VIP, r.Address, strconv.Itoa(int(r.Weight)), r.Admin, health, ago(st.Time, r.HealthSince),
						checkMarks(r.History), percent(r.Share), orDash(r.NextHop), orDash(firstOf(r.LastError, r.NextHopErr)))
				}
			})
		},
	}
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// checkMarks draws the latest check results, oldest first: + passed,
// x failed.
func checkMarks(h []api.CheckResult) string {
	if len(h) == 0 {
		return "-"
	}
	b := make([]byte, len(h))
	for i, r := range h {
		b[i] = '+'
		if r.Err != "" {
			b[i] = 'x'
		}
	}
	return string(b)
}

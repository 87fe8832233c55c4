package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/loader"
)

func backendHostCommand() *command {
	return &command{
		name:    "backend-host",
		summary: "prepare this host as a backend for direct server return",
		sub:     []*command{backendHostSetupCommand(), backendHostStatusCommand(), backendHostTeardownCommand()},
	}
}

func backendHostSetupCommand() *command {
	var (
		vips      []string
		iface     string
		stateFile string
		decap     bool
		generic   bool
		sources   []string
		dests     []string
	)
	return &command{
		name:    "setup",
		summary: "put VIPs on lo, set the DSR sysctls and attach the decap program (repairs what is missing)",
		usage:   "--vip ADDR [--vip ADDR ...] --iface IFACE [flags]",
		examples: `  xlb backend-host setup --vip 203.0.113.10 --iface eth0
  xlb backend-host setup --vip 203.0.113.10 --vip 2001:db8:f::10 --iface eth0
  xlb backend-host setup --vip 203.0.113.10 --iface eth0 --balancer-source 10.0.0.0/29 --decap-dest 10.0.1.21
  xlb backend-host setup --vip 203.0.113.10 --iface eth0 --decap=false   # L2 DSR only`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringArrayVar(&vips, "vip", nil, "a VIP this host serves (repeatable); added to lo")
			fs.StringVar(&iface, "iface", "", "interface the balancer's packets arrive on (required)")
			fs.StringVar(&stateFile, "state-file", hostnet.DefaultBackendHostState, "where setup records what it changed, for teardown")
			fs.BoolVar(&decap, "decap", true, "attach the decapsulation XDP program (needed for IPIP, not for L2 DSR)")
			fs.BoolVar(&generic, "generic", false, "attach in generic (skb) XDP mode, for drivers without native XDP")
			fs.StringArrayVar(&sources, "balancer-source", nil, "prefix the balancers' outer source addresses come from (repeatable; IPv4 and IPv6); tunnel packets from elsewhere are dropped (default 192.0.2.0/24 and 2001:db8:e::/64, the encap.source_v4/v6 of the guide)")
			fs.StringArrayVar(&dests, "decap-dest", nil, "accept tunnel packets only to this address of this host (repeatable; default: any destination)")
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if iface == "" {
				return usageErrorf("--iface: required, the interface the balancer's packets arrive on")
			}
			if len(vips) == 0 {
				return usageErrorf("--vip: at least one VIP address is required")
			}
			b := &hostnet.BackendHost{Iface: iface, StateFile: stateFile, Log: progressLogger(io)}
			for _, v := range vips {
				a, err := netip.ParseAddr(v)
				if err != nil {
					return usageErrorf("--vip %q: allowed are IPv4 or IPv6 addresses such as 203.0.113.10 or 2001:db8:f::10", v)
				}
				b.VIPs = append(b.VIPs, a)
			}
			opts := loader.DecapOptions{Generic: generic}
			for _, v := range sources {
				p, err := netip.ParsePrefix(v)
				if err != nil || p.Addr().Is4In6() {
					return usageErrorf("--balancer-source %q: allowed are IPv4 or IPv6 prefixes such as 192.0.2.0/24 or 2001:db8:e::/64", v)
				}
				opts.BalancerSources = append(opts.BalancerSources, p)
			}
			for _, v := range dests {
				a, err := netip.ParseAddr(v)
				if err != nil || a.Is4In6() || a.Zone() != "" {
					return usageErrorf("--decap-dest %q: allowed are IPv4 or IPv6 addresses of this host such as 198.51.100.11", v)
				}
				opts.Destinations = append(opts.Destinations, a)
			}
			if !decap && (len(sources) > 0 || len(dests) > 0) {
				return usageErrorf("--balancer-source and --decap-dest configure the decap program: not allowed with --decap=false")
			}
			if decap {
				if err := opts.Validate(); err != nil {
					return usageErrorf("%v", err)
				}
				b.Decap = loaderDecap{opts: opts}
				cfg, err := json.Marshal(opts)
				if err != nil {
					return err
				}
				b.DecapConfig = cfg
			}
			st, err := b.Setup()
			if err != nil {
				return fmt.Errorf("backend-host setup: %w", err)
			}
			fmt.Fprintf(io.out, "backend host ready on %s: %d VIP(s) added, %d sysctl(s) changed, decap attached by setup: %v (state %s)\n",
				iface, len(st.VIPs), len(st.Sysctls), st.Decap, stateFile)
			return nil
		},
	}
}

func backendHostTeardownCommand() *command {
	var stateFile string
	return &command{
		name:     "teardown",
		summary:  "undo exactly what backend-host setup changed",
		usage:    "[--state-file FILE]",
		examples: "  xlb backend-host teardown",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&stateFile, "state-file", hostnet.DefaultBackendHostState, "the state file setup wrote")
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := hostnet.TeardownBackendHost(hostnet.Netns{}, stateFile, loaderDecap{}, progressLogger(io)); err != nil {
				return fmt.Errorf("backend-host teardown: %w", err)
			}
			fmt.Fprintln(io.out, "backend host torn down")
			return nil
		},
	}
}

// loaderDecap attaches the loader's xdp_decap with a netlink attachment,
// which stays after this command exits, with the trust in opts.
type loaderDecap struct{ opts loader.DecapOptions }

// Attach attaches xdp_decap unless the kernel shows it attached already with
// the same trust.
func (d loaderDecap) Attach(ifname string) (bool, error) {
	st, err := loader.ReadDecap(ifname)
	if err != nil {
		return false, err
	}
	if st.ProgramID != 0 && !st.Ours {
		return false, fmt.Errorf("another XDP program (id %d) is attached to %s; detach it first", st.ProgramID, ifname)
	}
	if st.Trusts(d.opts) {
		return false, nil
	}
	if err := loader.AttachDecapWith(ifname, d.opts); err != nil {
		return false, err
	}
	return true, nil
}

func (loaderDecap) Detach(ifname string) error {
	err := loader.DetachDecap(ifname)
	if errors.Is(err, loader.ErrNotAttached) {
		return nil
	}
	return err
}

// Check reads what is attached to ifname and compares it with opts.
func (d loaderDecap) Check(ifname string) (hostnet.BackendHostCheck, error) {
	var c hostnet.BackendHostCheck
	st, err := loader.ReadDecap(ifname)
	if err != nil {
		return c, err
	}
	switch {
	case st.ProgramID == 0:
		c.Detail = "no XDP program attached"
		return c, nil
	case !st.Ours:
		c.Detail = fmt.Sprintf("another XDP program (id %d) is attached", st.ProgramID)
		return c, nil
	}
	c.Counters = st.Counters
	c.Detail = fmt.Sprintf("xdp_decap id %d, balancer sources %v", st.ProgramID, st.BalancerSources)
	if len(st.Destinations) > 0 {
		c.Detail += fmt.Sprintf(", destinations %v", st.Destinations)
	}
	for _, r := range loader.DecapReasons {
		c.Detail += fmt.Sprintf(", %s %d", r, st.Counters[r])
	}
	c.OK = st.Trusts(d.opts)
	if !c.OK {
		c.Detail = "trust differs from setup's: " + c.Detail
	}
	return c, nil
}

// progressLogger logs progress of commands that change the host as text on
// stderr.
func progressLogger(io *stdio) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

package main

import (
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
		sub:     []*command{backendHostSetupCommand(), backendHostTeardownCommand()},
	}
}

func backendHostSetupCommand() *command {
	var (
		vips      []string
		iface     string
		stateFile string
		decap     bool
		generic   bool
	)
	return &command{
		name:    "setup",
		summary: "put VIPs on lo, set the DSR sysctls and attach the decap program",
		usage:   "--vip ADDR [--vip ADDR ...] --iface IFACE [flags]",
		examples: `  xlb backend-host setup --vip 203.0.113.10 --iface eth0
  xlb backend-host setup --vip 203.0.113.10 --vip 2001:db8:f::10 --iface eth0
  xlb backend-host setup --vip 203.0.113.10 --iface eth0 --decap=false   # L2 DSR only`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringArrayVar(&vips, "vip", nil, "a VIP this host serves (repeatable); added to lo")
			fs.StringVar(&iface, "iface", "", "interface the balancer's packets arrive on (required)")
			fs.StringVar(&stateFile, "state-file", hostnet.DefaultBackendHostState, "where setup records what it changed, for teardown")
			fs.BoolVar(&decap, "decap", true, "attach the decapsulation XDP program (needed for IPIP, not for L2 DSR)")
			fs.BoolVar(&generic, "generic", false, "attach in generic (skb) XDP mode, for drivers without native XDP")
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
			if decap {
				b.Decap = loaderDecap{generic: generic}
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
// which stays after this command exits.
type loaderDecap struct{ generic bool }

func (d loaderDecap) Attach(ifname string) (bool, error) {
	id, err := hostnet.XDPProgID(hostnet.Netns{}, ifname)
	if err != nil {
		return false, err
	}
	if id != 0 {
		ours, err := loader.DecapAttached(ifname)
		if err != nil {
			return false, err
		}
		if ours {
			return false, nil
		}
		return false, fmt.Errorf("another XDP program (id %d) is attached to %s; detach it first", id, ifname)
	}
	if err := loader.AttachDecap(ifname, d.generic); err != nil {
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

// progressLogger logs progress of commands that change the host as text on
// stderr.
func progressLogger(io *stdio) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

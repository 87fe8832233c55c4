package main

import (
	"fmt"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/loader"
)

func vethPeerCommand() *command {
	var (
		iface  string
		remove bool
	)
	return &command{
		name:    "veth-peer",
		summary: "attach a pass-through XDP program to the peer of a balancer's veth, so XDP_TX frames leave at once",
		usage:   "--iface PEER [--remove]",
		examples: `  nsenter --net=/run/netns/switch xlb veth-peer --iface lb1-port
  xlb veth-peer --iface veth-lb1 --remove`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&iface, "iface", "", "the peer interface, in the namespace this command runs in (required)")
			fs.BoolVar(&remove, "remove", false, "remove the program again")
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if iface == "" {
				return usageErrorf("--iface: required, the veth peer of the balancer's interface")
			}
			if remove {
				if err := loader.DetachPass(iface); err != nil {
					return fmt.Errorf("veth-peer: %w", err)
				}
				fmt.Fprintf(io.out, "pass-through XDP program removed from %s\n", iface)
				return nil
			}
			v, err := hostnet.Veth(hostnet.Netns{}, iface)
			if err != nil {
				return fmt.Errorf("veth-peer: %w", err)
			}
			if !v.IsVeth {
				return usageErrorf("--iface %q: not a veth; only a veth peer needs this", iface)
			}
			id, err := hostnet.XDPProgID(hostnet.Netns{}, iface)
			if err != nil {
				return fmt.Errorf("veth-peer: %w", err)
			}
			if id != 0 {
				fmt.Fprintf(io.out, "%s has an XDP program already (id %d): nothing to do\n", iface, id)
				return nil
			}
			if err := loader.AttachPass(iface); err != nil {
				return fmt.Errorf("veth-peer: %w", err)
			}
			fmt.Fprintf(io.out, "pass-through XDP program attached to %s; it stays until the interface goes or --remove\n", iface)
			return nil
		},
	}
}

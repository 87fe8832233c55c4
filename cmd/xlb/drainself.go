package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

func drainSelfCommand() *command {
	var sock socketFlag
	return &command{
		name:    "drain-self",
		summary: "take this balancer out of the fleet: GRACEFUL_SHUTDOWN, then withdraw; it keeps forwarding",
		usage:   "",
		examples: "  xlb drain-self\n  xlb status    # bgp: drained, routes withdrawn after the graceful-shutdown wait\n" +
			"  xlb undrain-self",
		flags: func(fs *pflag.FlagSet) { sock.register(fs) },
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := sock.client().DrainSelf(); err != nil {
				return err
			}
			fmt.Fprintln(io.out, "draining: routes carry GRACEFUL_SHUTDOWN, then are withdrawn; forwarding goes on (undo: xlb undrain-self)")
			return nil
		},
	}
}

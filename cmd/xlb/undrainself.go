package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

func undrainSelfCommand() *command {
	var sock socketFlag
	return &command{
		name:     "undrain-self",
		summary:  "bring this balancer back into the fleet after drain-self",
		usage:    "",
		examples: "  xlb undrain-self",
		flags:    func(fs *pflag.FlagSet) { sock.register(fs) },
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := sock.client().UndrainSelf(); err != nil {
				return err
			}
			fmt.Fprintln(io.out, "undrained: servable VIPs are announced again")
			return nil
		},
	}
}

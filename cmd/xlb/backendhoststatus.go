package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/loader"
)

func backendHostStatusCommand() *command {
	var (
		stateFile string
		out       output
	)
	return &command{
		name:     "status",
		summary:  "show what backend-host setup put in place and what is missing (exit 1 when something is)",
		usage:    "[--state-file FILE] [-o table|json]",
		examples: "  xlb backend-host status\n  xlb backend-host status -o json",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&stateFile, "state-file", hostnet.DefaultBackendHostState, "the state file setup wrote")
			out.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			st, err := hostnet.LoadBackendHostState(stateFile)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("backend-host status: not set up (no state file %s): run xlb backend-host setup", stateFile)
			}
			if err != nil {
				return fmt.Errorf("backend-host status: %w", err)
			}
			var decap hostnet.Decap
			if st.Want.Decap || st.Decap {
				var opts loader.DecapOptions
				if len(st.Want.DecapConfig) > 0 {
					if err := json.Unmarshal(st.Want.DecapConfig, &opts); err != nil {
						return fmt.Errorf("backend-host status: decap config in %s: %w", stateFile, err)
					}
				}
				decap = loaderDecap{opts: opts}
			}
			checks, err := hostnet.CheckBackendHost(hostnet.Netns{}, st, decap)
			if err != nil {
				return fmt.Errorf("backend-host status: %w", err)
			}
			missing := 0
			for _, c := range checks {
				if !c.OK {
					missing++
				}
			}
			err = out.print(io.out, checks, func(t *table) {
				t.header("STATE", "ITEM", "DETAIL")
				for _, c := range checks {
					state := "ok"
					if !c.OK {
						state = "MISSING"
					}
					t.row(state, c.Item, c.Detail)
				}
			})
			if err != nil {
				return err
			}
			if missing > 0 {
				return fmt.Errorf("backend-host status: %d of %d items missing or wrong; xlb backend-host setup repairs them", missing, len(checks))
			}
			return nil
		},
	}
}

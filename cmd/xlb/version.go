package main

import (
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

func versionCommand() *command {
	var out output
	return &command{
		name:     "version",
		summary:  "print the version of this binary",
		usage:    "[-o table|json]",
		examples: "  xlb version\n  xlb version -o json",
		flags:    out.register,
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			v := currentVersion()
			return out.print(io.out, v, func(t *table) {
				t.header("VERSION", "COMMIT", "GO")
				t.row(v.Version, v.Commit, v.GoVersion)
			})
		},
	}
}

// noArgs rejects positional arguments for commands that take none.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q", args[0])
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd"
	"github.com/xlb-project/xlb/healthd/api"
	"golang.org/x/sys/unix"
)

func daemonCommand() *command {
	var (
		o                 healthd.RunOptions
		metrics, logLevel string
		cleanup           bool
		checkConfig       checkConfigFlag
		changed           func(string) bool
	)
	return &command{
		name:    "daemon",
		summary: "run the L4 balancer: datapath, health checks, API and metrics",
		usage: "[--iface IFACE] [--config FILE] [--state-dir DIR] [--socket PATH] [--bpffs DIR] [--metrics-addr ADDR]\n" +
			"  xlb daemon --check-config FILE\n" +
			"  xlb daemon --cleanup [--bpffs DIR] [--iface IFACE]",
		examples: "  xlb daemon --config /etc/xlb/xlb.yaml\n" +
			"  xlb daemon --iface eth0 --metrics-addr 127.0.0.1:9437\n" +
			"  xlb daemon --check-config /etc/xlb/xlb.yaml\n" +
			"  xlb daemon --cleanup --bpffs /sys/fs/bpf/xlb\n" +
			"  kill -HUP $(pidof xlb)    # reload the config; a bad one is refused",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.Interface, "iface", "", "interface to attach xdp_lb to (overrides the config's interface)")
			fs.StringVarP(&o.ConfigPath, "config", "c", "", "YAML configuration (see testdata/xlb.yaml)")
			fs.StringVar(&o.StateDir, "state-dir", "", "directory of the runtime overlay (default "+healthd.DefaultStateDir+")")
			fs.StringVar(&o.Socket, "socket", "", "API socket (default "+api.DefaultSocket+")")
			fs.StringVar(&o.BPFFS, "bpffs", "", "bpffs directory for pins, mounted if missing (default "+healthd.DefaultBPFFS+")")
			fs.StringVar(&metrics, "metrics-addr", "", "Prometheus metrics address (default "+healthd.DefaultMetricsAddr+"; \"\" with the flag given disables)")
			checkConfig.register(fs)
			fs.BoolVar(&cleanup, "cleanup", false, "remove everything the daemon pinned and attached, and exit")
			fs.BoolVar(&o.Generic, "generic", false, "attach in generic (skb) XDP mode")
			fs.BoolVar(&o.Verbose, "verbose", false, "print the verifier log when the kernel refuses the program")
			fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
			changed = fs.Changed
		},
		run: func(io *stdio, args []string) error {
			if checkConfig.set && cleanup {
				return usageErrorf("--check-config and --cleanup exclude each other")
			}
			if checkConfig.set {
				path, err := checkConfig.file(args, o.ConfigPath)
				if err != nil {
					return err
				}
				o.ConfigPath = path
				args = nil
			}
			if err := noArgs(args); err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErrorf("--log-level %q: allowed are debug, info, warn, error", logLevel)
			}
			if changed("metrics-addr") {
				o.MetricsAddr = &metrics
			}
			switch {
			case checkConfig.set:
				cfg, set, err := o.Resolve()
				if err != nil {
					return err
				}
				fmt.Fprintf(io.out, "%s: ok: %d VIPs, interface %s\n", o.ConfigPath, len(cfg.VIPs), set.Interface)
				return nil
			case cleanup:
				dir := firstOf(o.BPFFS, healthd.DefaultBPFFS)
				if err := healthd.Cleanup(dir); err != nil {
					return err
				}
				fmt.Fprintf(io.out, "removed the pins under %s\n", dir)
				return nil
			}
			o.Log = newLogger(io.err, level)
			return healthd.Run(context.Background(), o)
		},
	}
}

// newLogger logs text on a terminal and JSON otherwise.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

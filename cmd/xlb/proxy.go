package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/xlb-project/xlb/proxy"
	proxyadmin "github.com/xlb-project/xlb/proxy/admin"
	proxyconfig "github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/middleware"
	"github.com/xlb-project/xlb/proxy/middleware/ratelimit"
)

// defaultProxySocket is where the proxy's admin API listens unless the
// config says otherwise (admin.socket); the CLI's --socket default.
const defaultProxySocket = "/run/xlb-proxy.sock"

// proxyCommand is one verb with its own small grammar, because it both runs
// (xlb proxy --config FILE) and talks to a running proxy:
//
//	xlb proxy --config FILE
//	xlb proxy backend list [-o table|json]
//	xlb proxy backend drain|undrain POOL ADDR
//	xlb proxy reload
func proxyCommand() *command {
	var (
		cfgPath  string
		socket   string
		logLevel string
		checkCfg checkConfigFlag
		out      output
		changed  func(string) bool
	)
	return &command{
		name:    "proxy",
		summary: "run the L7 proxy, or drain, undrain, list its backends and reload it",
		usage: "--config FILE [--log-level debug|info|warn|error]\n" +
			"  xlb proxy --check-config FILE\n" +
			"  xlb proxy backend list [--socket PATH | --config FILE] [-o table|json]\n" +
			"  xlb proxy backend drain|undrain POOL ADDR [--socket PATH | --config FILE]\n" +
			"  xlb proxy reload [--socket PATH | --config FILE]",
		examples: "  xlb proxy --config testdata/proxy/example.yaml\n" +
			"  xlb proxy --check-config testdata/proxy/example.yaml\n" +
			"  xlb proxy backend list --socket /run/xlb-proxy.sock\n" +
			"  xlb proxy backend drain app 127.0.0.1:9001\n" +
			"  xlb proxy backend undrain app 127.0.0.1:9001\n" +
			"  xlb proxy reload        # same as kill -HUP",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&cfgPath, "config", "", "proxy config file (YAML); for the client verbs, where to read admin.socket")
			fs.StringVar(&socket, "socket", defaultProxySocket, "admin socket of a running proxy")
			fs.StringVar(&logLevel, "log-level", "info", "log level when running: debug, info, warn, error")
			checkCfg.register(fs)
			out.register(fs)
			changed = fs.Changed
		},
		run: func(io *stdio, args []string) error {
			if checkCfg.set {
				path, err := checkCfg.file(args, cfgPath)
				if err != nil {
					return err
				}
				cfg, err := proxyconfig.Load(path)
				if err != nil {
					return err
				}
				// With the middlewares a running proxy registers, so that
				// their config is checked too.
				opts, closeOpts := proxyOptions(nil, "")
				defer closeOpts()
				if _, err := proxy.New(cfg, opts); err != nil {
					return err
				}
				fmt.Fprintf(io.out, "%s: ok (%d listeners, %d pools, %d routes)\n", path, len(cfg.Listeners), len(cfg.Pools), len(cfg.Routes))
				return nil
			}
			if len(args) == 0 {
				if cfgPath == "" {
					return usageErrorf("proxy: --config FILE is required to run the proxy (or give a verb: backend, reload)")
				}
				return runProxy(io, cfgPath, logLevel)
			}
			sock := socket
			if cfgPath != "" && !changed("socket") {
				c, err := proxyconfig.Load(cfgPath)
				if err != nil {
					return err
				}
				if c.Admin.Socket == "" {
					return usageErrorf("--config %s: admin.socket is not set, so the proxy has no admin API", cfgPath)
				}
				sock = c.Admin.Socket
			}
			client := proxyadmin.NewClient(sock)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			switch args[0] {
			case "reload":
				if len(args) != 1 {
					return usageErrorf("proxy reload: unexpected argument %q", args[1])
				}
				if err := client.Reload(ctx); err != nil {
					return err
				}
				fmt.Fprintln(io.out, "reloaded")
				return nil
			case "backend":
			default:
				return usageErrorf("proxy: unknown verb %q: allowed are backend, reload (or --config FILE to run)", args[0])
			}
			if len(args) < 2 {
				return usageErrorf("proxy backend: needs list, drain or undrain")
			}
			switch args[1] {
			case "list":
				if len(args) != 2 {
					return usageErrorf("proxy backend list: unexpected argument %q", args[2])
				}
				list, err := client.Backends(ctx)
				if err != nil {
					return err
				}
				if list == nil {
					list = []proxyadmin.BackendInfo{}
				}
				return out.print(io.out, list, func(t *table) {
					t.header("POOL", "ADDRESS", "WEIGHT", "HEALTH", "DRAINED", "BREAKER", "RAMP", "IN-FLIGHT", "UPGRADED", "REQUESTS", "FAILURES")
					for _, b := range list {
						breaker, ramp := b.Breaker, "-"
						if breaker == "" {
							breaker = "-"
						}
						if b.Ramp > 0 {
							ramp = strconv.Itoa(int(b.Ramp*100)) + "%"
						}
						t.row(b.Pool, b.Address, strconv.Itoa(b.Weight), b.Health, strconv.FormatBool(b.Drained), breaker, ramp,
							strconv.FormatInt(b.InFlight, 10), strconv.Itoa(b.Upgraded),
							strconv.FormatUint(b.Requests, 10), strconv.FormatUint(b.Failures, 10))
					}
				})
			case "drain", "undrain":
				if len(args) != 4 {
					return usageErrorf("proxy backend %s: needs POOL ADDR, got %d arguments", args[1], len(args)-2)
				}
				pool, addr := args[2], args[3]
				if _, _, err := net.SplitHostPort(addr); err != nil {
					return usageErrorf("proxy backend %s: ADDR %q: allowed is host:port as in the config, e.g. 198.51.100.10:8080", args[1], addr)
				}
				var err error
				if args[1] == "drain" {
					err = client.Drain(ctx, pool, addr)
				} else {
					err = client.Undrain(ctx, pool, addr)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(io.out, "%s %s: %sed\n", pool, addr, args[1])
				return nil
			default:
				return usageErrorf("proxy backend: unknown verb %q: allowed are list, drain, undrain", args[1])
			}
		},
	}
}

// runProxy runs the proxy until SIGINT or SIGTERM; SIGHUP reloads the
// config file (an invalid one is logged and the running config stays).
func runProxy(io *stdio, cfgPath, logLevel string) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return usageErrorf("--log-level %q: allowed are debug, info, warn, error", logLevel)
	}
	log := slog.New(slog.NewJSONHandler(io.err, &slog.HandlerOptions{Level: level}))
	if os.Getenv("GOGC") == "" {
		// The proxy's live heap is small and its allocation rate high, so
		// the default GOGC=100 collects very often; 400 trades a few MB of
		// memory for a large cut in GC CPU per request. GOGC overrides.
		debug.SetGCPercent(400)
	}
	cfg, err := proxyconfig.Load(cfgPath)
	if err != nil {
		return err
	}
	opts, closeOpts := proxyOptions(log, cfgPath)
	defer closeOpts()
	p, err := proxy.New(cfg, opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := p.Reload(); err != nil {
					log.Error("reload rejected, keeping the running config", "err", err)
				}
			}
		}
	}()
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// proxyOptions registers the middlewares xlb ships with (route middleware
// kinds) and their metrics; stop stops them.
func proxyOptions(log *slog.Logger, cfgPath string) (opts proxy.Options, stop func()) {
	m := ratelimit.NewMetrics()
	limits := ratelimit.NewSet(log, m)
	return proxy.Options{
		Logger:     log,
		ConfigPath: cfgPath,
		Middleware: map[string]middleware.Factory{ratelimit.Kind: limits.Factory()},
		Collectors: m.Collectors(),
	}, limits.Close
}

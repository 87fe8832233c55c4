package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/internal/lab"
)

func labCommand() *command {
	return &command{
		name:    "lab",
		summary: "network-namespace lab: client, balancer and backends on this machine",
		sub: []*command{
			labUpCommand(), labDownCommand(), labShowCommand(),
			labTrafficCommand(), labServerCommand(), labServeCommand(),
		},
	}
}

// labFlags are the flags every lab command shares to find its lab.
type labFlags struct {
	prefix   string
	stateDir string
}

func (f *labFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.prefix, "prefix", lab.DefaultPrefix, "prefix of the lab's namespace names")
	fs.StringVar(&f.stateDir, "state-dir", "", "pid files, logs and daemon state (default "+lab.DefaultStateDir+"/PREFIX)")
}

func (f *labFlags) dir() string {
	if f.stateDir != "" {
		return f.stateDir
	}
	return filepath.Join(lab.DefaultStateDir, strings.TrimSuffix(f.prefix, "-"))
}

func (f *labFlags) open(io *stdio) (*lab.Lab, error) {
	return lab.Open(f.dir(), progressLogger(io))
}

func labUpCommand() *command {
	var (
		f          labFlags
		cfg        lab.Config
		ipv6       bool
		mode       string
		noDaemon   bool
		checkEvery time.Duration
		l7         bool
		l7cfg      lab.L7Config
	)
	return &command{
		name:    "up",
		summary: "build the lab and start its servers and balancer daemon",
		usage:   "[--backends N] [--ipv6] [flags]",
		examples: `  xlb lab up
  xlb lab up --backends 5 --ipv6
  xlb lab up --mode l2dsr
  xlb lab up --balancers 3 --routed    # a fleet: FRR router, ECMP, VIPs announced over BGP
  xlb lab up --l7 --l7-redis           # xlb proxy on every backend behind 203.0.113.10:8080, limits shared in Redis`,
		flags: func(fs *pflag.FlagSet) {
			fs.IntVar(&cfg.Backends, "backends", lab.DefaultBackends, fmt.Sprintf("number of backend hosts (1 to %d)", lab.MaxBackends))
			fs.IntVar(&cfg.Balancers, "balancers", 1, fmt.Sprintf("number of balancer hosts (1 to %d)", lab.MaxBalancers))
			fs.BoolVar(&ipv6, "ipv6", false, "also serve the IPv6 VIP "+lab.VIP6.String())
			fs.StringVar(&mode, "mode", "ipip", "forwarding mode of the VIPs: ipip or l2dsr")
			fs.BoolVar(&noDaemon, "no-daemon", false, "build the lab without starting the balancer daemon")
			fs.BoolVar(&cfg.Routed, "routed", false, "put an FRR router (ECMP) between the client and the balancers, which announce the VIPs to it over BGP")
			fs.DurationVar(&checkEvery, "check-interval", time.Second, "health check interval of the lab's VIPs")
			fs.BoolVar(&l7, "l7", false, fmt.Sprintf("run xlb proxy on every backend, listening on %s behind the VIP", lab.ProxyVIP()))
			fs.IntVar(&l7cfg.Rate, "l7-rate", 20, "with --l7: requests per second per client on "+lab.LimitedPath)
			fs.IntVar(&l7cfg.Burst, "l7-burst", 10, "with --l7: burst of the per-client limit")
			fs.BoolVar(&l7cfg.Redis, "l7-redis", false, "with --l7: share the limit between the proxies through a redis-server in the first balancer")
			f.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if cfg.Backends < 1 || cfg.Backends > lab.MaxBackends {
				return usageErrorf("--backends %d: allowed are 1 to %d", cfg.Backends, lab.MaxBackends)
			}
			if cfg.Balancers < 1 || cfg.Balancers > lab.MaxBalancers {
				return usageErrorf("--balancers %d: allowed are 1 to %d", cfg.Balancers, lab.MaxBalancers)
			}
			if mode != "ipip" && mode != "l2dsr" {
				return usageErrorf("--mode %q: allowed are ipip, l2dsr", mode)
			}
			if checkEvery < 100*time.Millisecond {
				return usageErrorf("--check-interval %s: allowed is 100ms or more", checkEvery)
			}
			if l7 {
				if cfg.Routed {
					return usageErrorf("--l7: not supported with --routed")
				}
				if l7cfg.Rate < 1 || l7cfg.Rate > lab.MaxL7Rate {
					return usageErrorf("--l7-rate %d: allowed are 1 to %d", l7cfg.Rate, lab.MaxL7Rate)
				}
				if l7cfg.Burst < 1 || l7cfg.Burst > lab.MaxL7Burst {
					return usageErrorf("--l7-burst %d: allowed are 1 to %d", l7cfg.Burst, lab.MaxL7Burst)
				}
				cfg.L7 = &l7cfg
			} else if l7cfg.Redis {
				return usageErrorf("--l7-redis: needs --l7")
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("lab up: needs root (it creates network namespaces and attaches XDP programs)")
			}
			cfg.Prefix, cfg.StateDir, cfg.Log = f.prefix, f.dir(), progressLogger(io)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Up(ctx, cfg)
			if err != nil {
				return fmt.Errorf("lab up: %w", err)
			}
			if cfg.Routed {
				if err := l.StartRouter(ctx, lab.RouterConfig{}); err != nil {
					_ = l.Down()
					return fmt.Errorf("lab up: %w", err)
				}
			}
			if !noDaemon {
				dc := lab.DaemonConfig{IPv6: ipv6, Mode: mode, CheckInterval: checkEvery, BGP: cfg.Routed}
				for _, b := range l.Balancers {
					if err := l.StartDaemon(ctx, b.Name, dc); err != nil {
						_ = l.Down()
						return fmt.Errorf("lab up: %w", err)
					}
				}
			}
			printLab(io, l)
			return nil
		},
	}
}

func printLab(io *stdio, l *lab.Lab) {
	var out output
	_ = out.print(io.out, nil, func(t *table) {
		t.header("HOST", "ROLE", "NAMESPACE", "IPV4", "IPV6", "MAC")
		for _, h := range l.Hosts() {
			t.row(h.Name, string(h.Role), h.Netns.Name, h.IPv4.String(), h.IPv6.String(), h.MAC.String())
		}
	})
	fmt.Fprintf(io.out, "\nVIPs %s and %s (TCP/UDP echo on port %d, HTTP on %d); state in %s\n",
		lab.VIP4, lab.VIP6, lab.EchoPort, lab.HTTPPort, l.StateDir())
	fmt.Fprintf(io.out, "try: nsenter --net=%s curl -s http://%s/\n", l.Client.Netns.Path(), lab.VIP4)
	if c := l.Config().L7; c != nil {
		fmt.Fprintf(io.out, "L7: xlb proxy on every backend at %s (%s limited to %d/s, burst %d, per client; shared in Redis: %v)\n",
			lab.ProxyVIP(), lab.LimitedPath, c.Rate, c.Burst, c.Redis)
		fmt.Fprintf(io.out, "try: nsenter --net=%s curl -si http://%s%s\n", l.Client.Netns.Path(), lab.ProxyVIP(), lab.LimitedPath)
	}
}

func labDownCommand() *command {
	var f labFlags
	return &command{
		name:     "down",
		summary:  "remove the lab: processes, namespaces, pins and state",
		usage:    "[flags]",
		examples: "  xlb lab down",
		flags:    f.register,
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := lab.Down(f.prefix, f.dir()); err != nil {
				return fmt.Errorf("lab down: %w", err)
			}
			fmt.Fprintln(io.out, "lab down")
			return nil
		},
	}
}

type labHostJSON struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	Netns string `json:"netns"`
	IPv4  string `json:"ipv4"`
	IPv6  string `json:"ipv6"`
	MAC   string `json:"mac"`
}

func labShowCommand() *command {
	var (
		f   labFlags
		out output
	)
	return &command{
		name:     "show",
		summary:  "list the lab's hosts and addresses",
		usage:    "[-o table|json] [flags]",
		examples: "  xlb lab show\n  xlb lab show -o json",
		flags: func(fs *pflag.FlagSet) {
			out.register(fs)
			f.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			l, err := f.open(io)
			if err != nil {
				return err
			}
			var hosts []labHostJSON
			for _, h := range l.Hosts() {
				hosts = append(hosts, labHostJSON{h.Name, string(h.Role), h.Netns.Name, h.IPv4.String(), h.IPv6.String(), h.MAC.String()})
			}
			return out.print(io.out, hosts, func(t *table) {
				t.header("HOST", "ROLE", "NAMESPACE", "IPV4", "IPV6", "MAC")
				for _, h := range hosts {
					t.row(h.Name, h.Role, h.Netns, h.IPv4, h.IPv6, h.MAC)
				}
			})
		},
	}
}

func labTrafficCommand() *command {
	var (
		f        labFlags
		vip      string
		rate     int
		duration time.Duration
		hold     bool
		from     string
	)
	return &command{
		name:    "traffic",
		summary: "open a stream of connections to a VIP and show live how they spread",
		usage:   "[--vip ADDR:PORT] [--rate N] [--duration D] [--hold] [flags]",
		examples: `  xlb lab traffic
  xlb lab traffic --duration 10s --rate 200
  xlb lab traffic --vip [2001:db8:f::10]:7 --hold`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&vip, "vip", netip.AddrPortFrom(lab.VIP4, lab.EchoPort).String(), "VIP and TCP echo port to connect to")
			fs.IntVar(&rate, "rate", 100, "new connections per second (1 to 2000)")
			fs.DurationVar(&duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
			fs.BoolVar(&hold, "hold", false, "keep one long-lived connection open and echo on it")
			fs.StringVar(&from, "from", "client", "lab host the connections come from")
			f.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			ap, err := netip.ParseAddrPort(vip)
			if err != nil {
				return usageErrorf("--vip %q: allowed is ADDR:PORT such as 203.0.113.10:7 or [2001:db8:f::10]:7", vip)
			}
			if rate < 1 || rate > 2000 {
				return usageErrorf("--rate %d: allowed are 1 to 2000", rate)
			}
			l, err := f.open(io)
			if err != nil {
				return err
			}
			h, ok := l.Host(from)
			if !ok {
				return usageErrorf("--from %q: no such lab host (see 'xlb lab show')", from)
			}
			var names []string
			for _, b := range l.Backends {
				names = append(names, b.Name)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			live := false
			if f, ok := io.out.(*os.File); ok {
				if st, err := f.Stat(); err == nil {
					live = st.Mode()&os.ModeCharDevice != 0
				}
			}
			res, err := lab.RunTraffic(ctx, lab.Client{Netns: h.Netns, Timeout: time.Second}, lab.TrafficConfig{
				VIP: ap, Rate: rate, Duration: duration, Backends: names, Hold: hold,
				HoldFile:  filepath.Join(l.StateDir(), "traffic.held"),
				PhaseFile: filepath.Join(l.StateDir(), "phase"),
				Out:       io.out, Live: live,
			})
			if err != nil {
				return fmt.Errorf("lab traffic: %w", err)
			}
			if hold && res.HeldFail > 0 {
				return fmt.Errorf("lab traffic: the long-lived connection to %s failed %d echoes", res.Held, res.HeldFail)
			}
			return nil
		},
	}
}

func labServerCommand() *command {
	var f labFlags
	action := func(name, summary string, do func(l *lab.Lab, backend string) error) *command {
		return &command{
			name:     name,
			summary:  summary,
			usage:    "BACKEND [flags]",
			examples: "  xlb lab server " + name + " be2",
			flags:    f.register,
			run: func(io *stdio, args []string) error {
				if len(args) != 1 {
					return usageErrorf("lab server %s needs one BACKEND (e.g. be2)", name)
				}
				l, err := f.open(io)
				if err != nil {
					return err
				}
				if h, ok := l.Host(args[0]); !ok || h.Role != lab.RoleBackend {
					return usageErrorf("BACKEND %q: no such backend in the lab (see 'xlb lab show')", args[0])
				}
				return do(l, args[0])
			},
		}
	}
	return &command{
		name:    "server",
		summary: "start or stop the echo server of a lab backend",
		sub: []*command{
			action("start", "start the backend's echo server", func(l *lab.Lab, b string) error { return l.StartServer(b) }),
			action("stop", "stop the backend's echo server", func(l *lab.Lab, b string) error { return l.StopServer(b) }),
		},
	}
}

func labServeCommand() *command {
	var cfg lab.ServerConfig
	return &command{
		name:     "serve",
		summary:  "run an echo server answering with its name (what lab backends run)",
		usage:    "--name NAME [flags]",
		examples: "  xlb lab serve --name be1",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&cfg.Name, "name", "", "name to answer with (required)")
			fs.IntVar(&cfg.HTTPPort, "http-port", lab.HTTPPort, "HTTP port: / answers the name, /healthz answers ok")
			fs.IntVar(&cfg.EchoPort, "echo-port", lab.EchoPort, "TCP and UDP echo port")
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if cfg.Name == "" {
				return usageErrorf("--name: required, the name the server answers with")
			}
			for _, p := range []struct {
				flag string
				v    int
			}{{"--http-port", cfg.HTTPPort}, {"--echo-port", cfg.EchoPort}} {
				if p.v < 1 || p.v > 65535 {
					return usageErrorf("%s %d: allowed are 1 to 65535", p.flag, p.v)
				}
			}
			cfg.Log = progressLogger(io)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return lab.Serve(ctx, cfg)
		},
	}
}

package healthd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/bgp"
	"github.com/xlb-project/xlb/healthd/check"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/statuspage"
	"github.com/xlb-project/xlb/loader"
)

// RunOptions are the command-line settings of `xlb daemon`; non-empty ones
// override the configuration file.
type RunOptions struct {
	ConfigPath  string // "" runs with no VIPs until the API adds some
	Interface   string
	StateDir    string
	Socket      string
	BPFFS       string
	MetricsAddr *string // nil: from the config
	Generic     bool    // attach XDP in generic (skb) mode
	Verbose     bool    // verifier log on load errors
	Log         *slog.Logger
}

// Settings are the effective settings after defaults and overrides.
type Settings struct {
	Interface, StateDir, Socket, SocketGroup, BPFFS, MetricsAddr string
}

// Resolve loads the configuration and applies defaults and overrides; it
// touches nothing (this is `xlb daemon --check-config`).
func (o RunOptions) Resolve() (*Config, Settings, error) {
	cfg := &Config{}
	if o.ConfigPath != "" {
		var err error
		if cfg, err = LoadConfig(o.ConfigPath); err != nil {
			return nil, Settings{}, err
		}
	}
	s := Settings{
		Interface:   firstNonEmpty(o.Interface, cfg.Interface),
		StateDir:    firstNonEmpty(o.StateDir, cfg.StateDir, DefaultStateDir),
		Socket:      firstNonEmpty(o.Socket, cfg.Socket, api.DefaultSocket),
		SocketGroup: cfg.SocketGroup,
		BPFFS:       firstNonEmpty(o.BPFFS, cfg.BPFFS, DefaultBPFFS),
		MetricsAddr: DefaultMetricsAddr,
	}
	if cfg.MetricsAddr != nil {
		s.MetricsAddr = *cfg.MetricsAddr
	}
	if o.MetricsAddr != nil {
		s.MetricsAddr = *o.MetricsAddr
	}
	if s.Interface == "" {
		return nil, s, api.FieldErr("interface", "missing: give --iface or interface: in the config")
	}
	if s.MetricsAddr != "" {
		if _, err := netip.ParseAddrPort(s.MetricsAddr); err != nil {
			return nil, s, api.FieldErr("metrics-addr", "%q is not ADDR:PORT (e.g. 127.0.0.1:9437) or \"\" to disable", s.MetricsAddr)
		}
	}
	return cfg, s, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Run is `xlb daemon`: it loads or adopts the datapath, attaches it, applies
// the configuration and overlay, runs health checks, serves the API and the
// metrics, reloads on SIGHUP, and returns when ctx ends or on SIGTERM/SIGINT.
// The pinned datapath keeps forwarding after it returns.
func Run(ctx context.Context, o RunOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, set, err := o.Resolve()
	if err != nil {
		return err
	}
	gid := -1
	if set.SocketGroup != "" {
		g, err := user.LookupGroup(set.SocketGroup)
		if err != nil {
			return api.FieldErr("socket_group", "%q: no such group (create it with groupadd, or leave socket_group out for root only)", set.SocketGroup)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	mac, addrs, err := hostnet.InterfaceAddrs(set.Interface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", set.Interface, err)
	}
	dpc := loader.Config{SourceMAC: mac, MTU: uint16(cfg.Encap.MTU), ICMPRate: cfg.Encap.ICMPRate, ICMPBurst: cfg.Encap.ICMPBurst}
	if dpc.OuterSource4, err = outerSource(cfg.Encap.SourceV4, addrs, true); err != nil {
		return err
	}
	if dpc.OuterSource6, err = outerSource(cfg.Encap.SourceV6, addrs, false); err != nil {
		return err
	}

	dp, err := loader.Load(loader.Options{PinDir: set.BPFFS, Verbose: o.Verbose, MaxBackends: cfg.maxBackends()})
	if err != nil {
		return fmt.Errorf("load datapath: %w", err)
	}
	defer dp.Close() // keeps the pins: forwarding goes on
	if err := dp.SetConfig(dpc); err != nil {
		return err
	}

	var d *Daemon
	prober := check.NewProber(check.Config{
		Logger: log,
		OnEvent: func(e check.Event) {
			d.HealthChanged(e.ID, e.To.String(), e.Err, e.Time)
		},
		OnResult: func(id string, r check.Result) {
			d.ObserveCheck(r.Latency)
			d.CheckResult(id)
		},
	})
	d, err = New(Options{
		Datapath: dp, Prober: proberAdapter{prober}, Resolver: neighborResolver{},
		StateDir: set.StateDir, Log: log, MaxBackends: dp.MaxBackends(),
	})
	if err != nil {
		return err
	}
	if cfg.BGP != nil {
		sp, err := bgp.New(*cfg.BGP, log)
		if err != nil {
			return err
		}
		if err := sp.Start(ctx); err != nil {
			return err
		}
		defer sp.Stop()
		d.EnableBGP(sp, *cfg.BGP)
		log.Info("bgp speaker started", "local_as", cfg.BGP.LocalAS, "peers", len(cfg.BGP.Peers))
	}
	done := make(chan struct{})
	defer close(done)
	if err := hostnet.WatchNeighbors(done, d.Refresh); err != nil {
		log.Warn("neighbour changes not watched; unresolved next hops are retried every second", "err", err)
	}
	if err := d.Apply(cfg); err != nil {
		return err
	}
	// Attach after the maps are filled: the first packet finds the VIPs.
	if err := dp.Attach(set.Interface, o.Generic); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	log.Info("datapath attached", "ifname", set.Interface, "bpffs", set.BPFFS, "vips", len(cfg.VIPs))
	warnVeth(d, set.Interface, log)
	d.SetAttached()

	ctx, cancel := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	l, err := ListenSocket(set.Socket, gid)
	if err != nil {
		return err
	}
	defer os.Remove(set.Socket)
	errc := make(chan error, 3)
	go func() { errc <- NewServer(d, gid, log).Serve(ctx, l) }()
	go func() {
		if err := prober.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("health checks: %w", err)
		}
	}()
	if set.MetricsAddr != "" {
		ml, err := net.Listen("tcp", set.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		// /metrics for Prometheus, the fleet report for fleet-check, and
		// everything else the read-only status page (/ and /status), which
		// refuses any method but GET and HEAD.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(d.Registry(), promhttp.HandlerOpts{}))
		mux.HandleFunc("GET "+api.PathFleetHTTP, func(w http.ResponseWriter, _ *http.Request) { reply(w, d.FleetReport()) })
		mux.Handle("/", statuspage.New(d.StatusView, statuspage.Options{}))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ms.Serve(ml) }()
		defer ms.Close()
		log.Info("metrics and status page", "addr", ml.Addr().String(), "status", "http://"+ml.Addr().String()+"/status")
	}
	log.Info("api", "socket", set.Socket)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			d.Leave(context.Background())
			log.Info("stopping; the pinned datapath keeps forwarding")
			return nil
		case err := <-errc:
			return err
		case <-tick.C:
			d.Tick()
		case <-hup:
			c := &Config{}
			if o.ConfigPath != "" {
				if c, err = LoadConfig(o.ConfigPath); err != nil {
					log.Error("reload refused: the running state is kept", "err", err)
					continue
				}
			}
			if c.maxBackends() != dp.MaxBackends() {
				log.Error("reload refused: the running state is kept",
					"err", api.FieldErr("max_backends", "%d differs from the running %d: it sizes the pinned maps; stop, run xlb daemon --cleanup and start again", c.maxBackends(), dp.MaxBackends()))
				continue
			}
			if !reflect.DeepEqual(c.BGP, cfg.BGP) {
				log.Warn("the bgp section changed: it takes effect at the next start; the VIPs are reloaded")
				c.BGP = cfg.BGP
			}
			if err := d.Apply(c); err != nil {
				log.Error("reload refused: the running state is kept", "err", err)
				continue
			}
			log.Info("configuration reloaded", "vips", len(c.VIPs))
		}
	}
}

// Cleanup is `xlb daemon --cleanup`: it removes everything the daemon pinned
// under bpffs, which detaches the program.
func Cleanup(bpffs string) error {
	if err := loader.Cleanup(bpffs); err != nil {
		return fmt.Errorf("clean up %s: %w", bpffs, err)
	}
	return nil
}

// outerSource picks the outer source prefix: the configured one, else the
// interface's first address of the family as a single address.
func outerSource(conf string, addrs []netip.Prefix, v4 bool) (netip.Prefix, error) {
	if conf != "" {
		p, err := netip.ParsePrefix(conf)
		if err != nil {
			return netip.Prefix{}, api.FieldErr("encap", "%q is not a prefix", conf)
		}
		return p.Masked(), nil
	}
	for _, a := range addrs {
		if a.Addr().Is4() == v4 {
			return netip.PrefixFrom(a.Addr(), a.Addr().BitLen()), nil
		}
	}
	return netip.Prefix{}, nil
}

// warnVeth warns once, in the log and in the status, when ifname is a veth
// whose peer may hold XDP_TX frames back (no XDP program there, or in
// another namespace where it cannot be checked).
func warnVeth(d *Daemon, ifname string, log *slog.Logger) {
	v, err := hostnet.Veth(hostnet.Netns{}, ifname)
	if err != nil {
		log.Warn("could not tell whether the interface is a veth", "ifname", ifname, "err", err)
		return
	}
	if !v.NeedsPeerXDP() {
		return
	}
	fix := v.Fix(ifname)
	log.Warn("veth peer without XDP: forwarded packets may wait", "ifname", ifname, "peer_ifindex", v.PeerIndex, "fix", fix)
	d.Warn(fix)
}

// proberAdapter runs the daemon's checks with healthd/check.
type proberAdapter struct{ p *check.Prober }

func (a proberAdapter) Set(id string, c HealthCheck) error {
	s := check.Spec{
		Kind: check.Kind(c.Kind), Target: c.Target.String(), Interval: c.Interval, Timeout: c.Timeout,
		Rise: c.Rise, Fall: c.Fall, Path: c.Path, Host: c.Host, StartHealthy: c.StartHealthy,
	}
	if s.Timeout == 0 && s.Interval != 0 && s.Interval < check.DefaultTimeout {
		s.Timeout = s.Interval
	}
	return a.p.Set(id, s)
}

func (a proberAdapter) Remove(id string) { a.p.Remove(id) }

// CheckStatus returns a check's state and recent results (checkStatuser).
func (a proberAdapter) CheckStatus(id string) (check.Status, bool) { return a.p.Status(id) }

// neighborResolver resolves next hops with netlink in the daemon's network
// namespace.
type neighborResolver struct{}

func (neighborResolver) Resolve(a netip.Addr, onLink bool) (net.HardwareAddr, error) {
	nh, err := hostnet.Resolve(a)
	if err != nil {
		return nil, err
	}
	if onLink && nh.Gateway {
		return nil, fmt.Errorf("l2dsr needs %s on-link, but it is reached through gateway %s", a, nh.Addr)
	}
	return nh.MAC, nil
}

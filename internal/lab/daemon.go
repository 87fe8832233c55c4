package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DaemonConfig is what the lab's balancer daemons serve.
type DaemonConfig struct {
	// IPv6 adds the IPv6 VIP (VIP6) next to VIP4.
	IPv6 bool
	// Mode is ipip (default) or l2dsr.
	Mode string
	// CheckInterval of the health checks (TCP on EchoPort; HTTP GET
	// ProxyHealthPath on ProxyPort for the L7 VIP); default 1s.
	CheckInterval time.Duration
	// Rise and Fall of the health checks; default 2 each.
	Rise, Fall int
	// DrainTimeout of the VIPs; default 30s.
	DrainTimeout time.Duration
	// Weights of backends by name; default 1.
	Weights map[string]int
	// MTU is the daemon's encap.mtu; default the backends' link MTU.
	MTU int
	// BGP announces the VIPs to the lab's router (a routed lab only):
	// AS DefaultBalancerAS, the balancer's addresses as router id and next
	// hops, hold time DefaultHoldTime.
	BGP bool
	// GracefulShutdownWait and LeaveWait of the bgp section; default 1s
	// and 2s, short for tests.
	GracefulShutdownWait, LeaveWait time.Duration
	// MinHealthy of every VIP; default the daemon's (1).
	MinHealthy int
	// MetricsAddr is where the daemon serves /metrics and the status page,
	// inside the balancer's namespace; default none.
	MetricsAddr string
	// L7 adds VIP4:ProxyPort/tcp, the proxies' port; StartDaemon sets it
	// in a lab with Config.L7.
	L7 bool
	// StatelessUDP makes the UDP echo VIPs stateless (no flow state).
	StatelessUDP bool
}

// VIPs returns the VIP keys the daemon serves, as ADDR:PORT/PROTO: the TCP
// echo, UDP echo and HTTP ports of each VIP address.
func (c DaemonConfig) VIPs() []string {
	addrs := []netip.Addr{VIP4}
	if c.IPv6 {
		addrs = append(addrs, VIP6)
	}
	var out []string
	for _, a := range addrs {
		for _, pp := range []struct {
			port  uint16
			proto string
		}{{EchoPort, "tcp"}, {EchoPort, "udp"}, {HTTPPort, "tcp"}} {
			out = append(out, netip.AddrPortFrom(a, pp.port).String()+"/"+pp.proto)
		}
	}
	if c.L7 {
		out = append(out, ProxyVIP().String()+"/tcp")
	}
	return out
}

// DaemonPaths are where a balancer's daemon keeps its files.
type DaemonPaths struct {
	Config   string // the YAML config the lab wrote
	Socket   string // the control API
	StateDir string // runtime overlay
	BPFFS    string // pins
}

// DaemonPaths returns the paths of a balancer's daemon.
func (l *Lab) DaemonPaths(balancer string) DaemonPaths {
	dir := filepath.Join(l.cfg.StateDir, balancer)
	return DaemonPaths{
		Config:   filepath.Join(dir, "xlb.yaml"),
		Socket:   filepath.Join(dir, "xlb.sock"),
		StateDir: filepath.Join(dir, "state"),
		BPFFS:    filepath.Join(BPFFS, l.cfg.Prefix+balancer),
	}
}

// daemonYAML renders the daemon's configuration for the lab.
func (l *Lab) daemonYAML(lb Host, p DaemonPaths, c DaemonConfig) string {
	if c.Mode == "" {
		c.Mode = "ipip"
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Second
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 2
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	timeout := c.CheckInterval / 2
	var b strings.Builder
	metrics := c.MetricsAddr
	if metrics == "" && l.Router != nil {
		// Reachable from the client through the router: fleet-check by URL.
		metrics = netip.AddrPortFrom(lb.IPv4, MetricsPort).String()
	}
	fmt.Fprintf(&b, "# Written by the xlb lab.\ninterface: %s\nbpffs: %s\nstate_dir: %s\nsocket: %s\nmetrics_addr: \"%s\"\n",
		Ifname, p.BPFFS, p.StateDir, p.Socket, metrics)
	if c.BGP {
		b.WriteString(l.bgpYAML(lb, c))
	}
	if c.MTU == 0 {
		c.MTU = backendMTU // room for the outer header
	}
	fmt.Fprintf(&b, "encap: { source_v4: %s, source_v6: \"%s\", mtu: %d }\nvips:\n", l.outerSource4(), OuterSource6, c.MTU)
	for _, v := range c.VIPs() {
		fmt.Fprintf(&b, "  - address: \"%s\"\n    mode: %s\n    drain_timeout: %s\n", v, c.Mode, c.DrainTimeout)
		if c.MinHealthy != 0 {
			fmt.Fprintf(&b, "    min_healthy: %d\n", c.MinHealthy)
		}
		if c.StatelessUDP && strings.HasSuffix(v, "/udp") {
			b.WriteString("    stateless: true\n")
		}
		// The L7 VIP's backends are the proxies: check the proxy (its own
		// health route, on the socket that serves the VIP), not the app
		// server next to it, or a host whose proxy died keeps its share.
		probe := fmt.Sprintf("kind: tcp, port: %d", EchoPort)
		if v == ProxyVIP().String()+"/tcp" {
			probe = fmt.Sprintf("kind: http, port: %d, path: %s", ProxyPort, ProxyHealthPath)
		}
		fmt.Fprintf(&b, "    check: { %s, interval: %s, timeout: %s, rise: %d, fall: %d }\n    backends:\n",
			probe, c.CheckInterval, timeout, c.Rise, c.Fall)
		is6 := strings.HasPrefix(v, "[")
		for _, be := range l.Backends {
			addr := be.IPv4
			if is6 {
				addr = be.IPv6
			}
			w := c.Weights[be.Name]
			if w == 0 {
				w = 1
			}
			fmt.Fprintf(&b, "      - { address: \"%s\", weight: %d }\n", addr, w)
		}
	}
	return b.String()
}

// StartDaemon writes the balancer's config and starts "xlb daemon" in its
// namespace (network namespace only, so its pins stay visible), then waits
// for its API socket.
func (l *Lab) StartDaemon(ctx context.Context, balancer string, c DaemonConfig) error {
	h, ok := l.Host(balancer)
	if !ok || h.Role != RoleBalancer {
		return fmt.Errorf("balancer %q: no such balancer in the lab", balancer)
	}
	p := l.DaemonPaths(balancer)
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return fmt.Errorf("start daemon in %s: %w", balancer, err)
	}
	if c.BGP && l.Router == nil {
		return fmt.Errorf("start daemon in %s: bgp needs a routed lab (Config.Routed)", balancer)
	}
	if l.cfg.L7 != nil {
		c.L7 = true
	}
	if err := os.WriteFile(p.Config, []byte(l.daemonYAML(h, p, c)), 0o644); err != nil {
		return fmt.Errorf("start daemon in %s: %w", balancer, err)
	}
	return l.RunDaemon(ctx, balancer, l.cfg.Binary)
}

// RunDaemon starts a daemon from binary with the config StartDaemon wrote;
// with another binary this is an upgrade.
func (l *Lab) RunDaemon(ctx context.Context, balancer, binary string) error {
	h, _ := l.Host(balancer)
	p := l.DaemonPaths(balancer)
	_ = os.Remove(p.Socket)
	if _, err := startProcess(l.cfg.StateDir, h.Netns, daemonName(balancer), binary, "daemon", "--config", p.Config); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(p.Socket); err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(l.cfg.StateDir, daemonName(balancer)+".log"))
			return fmt.Errorf("daemon in %s did not open its socket %s; log:\n%s", balancer, p.Socket, tail(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StopDaemon stops a balancer's daemon (SIGTERM); its pins stay, so the
// datapath keeps forwarding.
func (l *Lab) StopDaemon(balancer string) error {
	return stopProcess(l.cfg.StateDir, daemonName(balancer))
}

func daemonName(balancer string) string { return balancer + ".daemon" }

// CLI runs "xlb ARGS --socket SOCKET" against a balancer's daemon in its
// namespace and returns stdout; a failure carries stderr.
func (l *Lab) CLI(ctx context.Context, balancer string, args ...string) (string, error) {
	p := l.DaemonPaths(balancer)
	cmd := l.Command(ctx, balancer, append(args, "--socket", p.Socket)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("xlb %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), fmt.Errorf("xlb %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

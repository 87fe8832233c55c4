package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The router of a routed lab runs FRR (Debian's frr package): zebra, which
// installs the routes bgpd chooses into the router namespace's kernel
// table, and bgpd, which peers with every balancer. Both run as lab
// processes (pid files, logs in the state directory) with configurations
// written here, never the system's /etc/frr.

// FRRDir holds FRR's daemons.
const FRRDir = "/usr/lib/frr"

// Defaults of RouterConfig.
const (
	DefaultRouterAS   = 65000
	DefaultBalancerAS = 65001
	DefaultHoldTime   = 3 * time.Second
)

// RouterConfig is the router's BGP setup.
type RouterConfig struct {
	AS         uint32        // default DefaultRouterAS
	BalancerAS uint32        // every balancer's AS; default DefaultBalancerAS
	HoldTime   time.Duration // whole seconds, at least 3s; default DefaultHoldTime
}

func (c *RouterConfig) setDefaults() {
	if c.AS == 0 {
		c.AS = DefaultRouterAS
	}
	if c.BalancerAS == 0 {
		c.BalancerAS = DefaultBalancerAS
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
}

// frrDir is where the router's FRR files live: configs, pid files, the
// zebra and vty sockets.
func (l *Lab) frrDir() string { return filepath.Join(l.cfg.StateDir, "frr") }

// bgpdConf renders bgpd's configuration: one peer group for the
// balancers, ECMP over up to 16 of them, GRACEFUL_SHUTDOWN honoured by
// setting local preference 0 (RFC 8326), nothing sent back to the
// balancers.
func (l *Lab) bgpdConf(c RouterConfig) string {
	hold := int(c.HoldTime / time.Second)
	keepalive := max(hold/3, 1)
	var b strings.Builder
	fmt.Fprintf(&b, "! Written by the xlb lab.\nhostname %srouter\n!\n", l.cfg.Prefix)
	fmt.Fprintf(&b, "bgp community-list standard GSHUT seq 5 permit graceful-shutdown\n!\n")
	fmt.Fprintf(&b, "route-map FROM-LB permit 10\n match community GSHUT\n set local-preference 0\nexit\n")
	fmt.Fprintf(&b, "route-map FROM-LB permit 20\nexit\n!\nroute-map NOTHING deny 10\nexit\n!\n")
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n", c.AS, l.Router.IPv4)
	fmt.Fprintf(&b, " neighbor LB peer-group\n neighbor LB remote-as %d\n neighbor LB timers %d %d\n neighbor LB timers connect 1\n",
		c.BalancerAS, keepalive, hold)
	for _, lb := range l.Balancers {
		fmt.Fprintf(&b, " neighbor %s peer-group LB\n", lb.IPv4)
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " !\n address-family %s unicast\n  neighbor LB activate\n  neighbor LB route-map FROM-LB in\n", af)
		fmt.Fprintf(&b, "  neighbor LB route-map NOTHING out\n  maximum-paths 16\n exit-address-family\n")
	}
	b.WriteString("exit\n")
	return b.String()
}

// StartRouter starts zebra and bgpd in the router namespace of a routed
// lab and waits until bgpd answers. The balancers' daemons peer with it
// (their BGP section: BGPConfigFor).
func (l *Lab) StartRouter(ctx context.Context, c RouterConfig) error {
	if l.Router == nil {
		return errors.New("start router: the lab is not routed (Config.Routed)")
	}
	c.setDefaults()
	if c.HoldTime < 3*time.Second || c.HoldTime%time.Second != 0 {
		return fmt.Errorf("router hold time %s: allowed are whole seconds from 3s", c.HoldTime)
	}
	for _, d := range []string{"zebra", "bgpd"} {
		if _, err := os.Stat(filepath.Join(FRRDir, d)); err != nil {
			return fmt.Errorf("start router: %w (install Debian's frr package: scripts/deps.sh)", err)
		}
	}
	// FRR drops to its own user, which must be able to write its pid
	// files and sockets here.
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("start router: %w (install Debian's frr package: scripts/deps.sh)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := l.frrDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	zconf := fmt.Sprintf("! Written by the xlb lab.\nhostname %srouter\n", l.cfg.Prefix)
	if err := os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte(zconf), 0o644); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bgpd.conf"), []byte(l.bgpdConf(c)), 0o644); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	zserv := filepath.Join(dir, "zserv.api")
	common := func(d string) []string {
		return []string{filepath.Join(FRRDir, d), "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", zserv, "--vty_socket", dir, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr", "--log", "stdout"}
	}
	if _, err := startProcess(l.cfg.StateDir, l.Router.Netns, "router.zebra", common("zebra")...); err != nil {
		return err
	}
	if err := l.waitRouter(ctx, "zebra", func() bool { _, err := os.Stat(zserv); return err == nil }); err != nil {
		return err
	}
	if _, err := startProcess(l.cfg.StateDir, l.Router.Netns, "router.bgpd", common("bgpd")...); err != nil {
		return err
	}
	return l.waitRouter(ctx, "bgpd", func() bool {
		_, err := l.Vtysh(ctx, "show bgp summary json")
		return err == nil
	})
}

func (l *Lab) waitRouter(ctx context.Context, daemon string, ready func() bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for !ready() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(l.cfg.StateDir, "router."+daemon+".log"))
			return fmt.Errorf("router's %s did not come up; log:\n%s", daemon, tail(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StopRouter stops bgpd and zebra; zebra removes the routes it installed.
func (l *Lab) StopRouter() error {
	return errors.Join(stopProcess(l.cfg.StateDir, "router.bgpd"), stopProcess(l.cfg.StateDir, "router.zebra"))
}

// Vtysh runs one vtysh command against the router's daemons and returns
// its output.
func (l *Lab) Vtysh(ctx context.Context, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "vtysh", "--vty_socket", l.frrDir(), "-c", command)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh -c %q: %w: %s", command, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MetricsPort is where the daemons of a routed lab serve metrics and the
// fleet report, on the balancer's own address.
const MetricsPort = 9437

// bgpYAML renders a balancer daemon's bgp section: one session to the
// router, the balancer's addresses as router id and next hops.
func (l *Lab) bgpYAML(lb Host, c DaemonConfig) string {
	gshut, leave := c.GracefulShutdownWait, c.LeaveWait
	if gshut == 0 {
		gshut = time.Second
	}
	if leave == 0 {
		leave = 2 * time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bgp:\n  local_as: %d\n  router_id: %s\n  next_hop_v6: \"%s\"\n", DefaultBalancerAS, lb.IPv4, lb.IPv6)
	fmt.Fprintf(&b, "  graceful_shutdown_wait: %s\n  leave_wait: %s\n", gshut, leave)
	fmt.Fprintf(&b, "  peers:\n    - { address: %s, as: %d, hold_time: %s }\n", l.Router.IPv4, DefaultRouterAS, DefaultHoldTime)
	return b.String()
}

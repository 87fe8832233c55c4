package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/xlb-project/xlb/internal/hostnet"
)

// Operations on a fleet of balancers behind the router of a routed lab:
// stopping daemons the way failures do, and a client that still sends to
// one balancer (as a router that has not converged would).

// DaemonPID returns the pid of a balancer's daemon, 0 when none runs.
func (l *Lab) DaemonPID(balancer string) int {
	b, err := os.ReadFile(pidFile(l.cfg.StateDir, daemonName(balancer)))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !processAlive(pid) {
		return 0
	}
	return pid
}

// SignalDaemon sends sig to a balancer's daemon and returns at once; the
// daemon's pid file stays until StopDaemon or lab down.
func (l *Lab) SignalDaemon(balancer string, sig syscall.Signal) error {
	pid := l.DaemonPID(balancer)
	if pid == 0 || !ownProcess(pid) {
		return fmt.Errorf("signal daemon in %s: not running", balancer)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal daemon in %s: %w", balancer, err)
	}
	return nil
}

// KillDaemon kills a balancer's daemon at once (SIGKILL): its BGP
// sessions close with it, its pinned datapath keeps forwarding.
func (l *Lab) KillDaemon(balancer string) error {
	return killProcess(l.cfg.StateDir, daemonName(balancer))
}

// Isolate takes a balancer's link down, as a host that dies does: nothing
// it sends or would receive passes, so its BGP sessions end only when the
// router's hold timer expires.
func (l *Lab) Isolate(balancer string) error {
	h, ok := l.Host(balancer)
	if !ok || h.Role != RoleBalancer {
		return fmt.Errorf("balancer %q: no such balancer in the lab", balancer)
	}
	// The switch keeps the dead host's MAC on its port, as a real switch
	// does until the entry ages out. Without it the bridge would forget
	// the MAC when the port goes down and flood the frames to every
	// port, and the other balancers' XDP programs, which do not filter on
	// the destination MAC, would forward them.
	if out, err := l.Switch.Command("bridge", "fdb", "replace", h.MAC.String(), "dev", h.Name, "master", "static").CombinedOutput(); err != nil {
		return fmt.Errorf("isolate %s: pin its MAC in the switch: %w: %s", balancer, err, out)
	}
	nh, err := h.Netns.Handle()
	if err != nil {
		return err
	}
	defer nh.Close()
	link, err := nh.LinkByName(Ifname)
	if err != nil {
		return fmt.Errorf("isolate %s: %w", balancer, err)
	}
	if err := nh.LinkSetDown(link); err != nil {
		return fmt.Errorf("isolate %s: %w", balancer, err)
	}
	return nil
}

// sideOctet is the side client's address on the segment (.100).
const sideOctet = 100

// AddSideClient adds a client on the balancers' segment whose routes to the
// VIPs point at one balancer, whatever the router does: packets that still
// arrive at a balancer after it left. Lab down removes it with the rest.
func (l *Lab) AddSideClient(via string) (Host, error) {
	if l.Router == nil {
		return Host{}, errors.New("side client: the lab is not routed")
	}
	lb, ok := l.Host(via)
	if !ok || lb.Role != RoleBalancer {
		return Host{}, fmt.Errorf("balancer %q: no such balancer in the lab", via)
	}
	h := Host{
		Name: "side", Role: RoleClient, Netns: hostnet.Netns{Name: l.cfg.Prefix + "side"},
		IPv4: netip.AddrFrom4([4]byte{198, 51, 100, sideOctet}),
		IPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", sideOctet)),
	}
	if err := l.addHost(&h); err != nil {
		return Host{}, fmt.Errorf("side client: %w", err)
	}
	err := addStaticRoutes(h.Netns, Ifname, []staticRoute{{VIPNet4, lb.IPv4}, {VIPNet6, lb.IPv6}})
	return h, err
}

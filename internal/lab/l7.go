package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xlb-project/xlb/internal/hostnet"
)

// The L7 tier of the lab (Config.L7): "xlb proxy" on every backend host,
// listening on the VIP's port, as the L4 tier's backend pool. Every proxy balances
// over the echo servers of all backend hosts (their own addresses, port
// HTTPPort), with sticky cookies signed by one key the lab generates, so a
// client stays on its app server whichever proxy its connection lands on.
// Requests under LimitedPath are rate limited per client address, which
// the proxies see because the L4 tier forwards with direct server return.
const (
	// ProxyPort is the port the proxies listen on, on every address of
	// their host: the VIP for clients and the host's own address for the
	// balancer's health checks, one socket for both. The echo servers keep
	// HTTPPort.
	ProxyPort = 8080
	// ProxyHealthPath is answered 200 by each proxy itself (a respond
	// route, no app server involved); the balancers' daemons check the L7
	// VIP's backends with it, so a host whose proxy is down or hung leaves
	// the VIP even while its app server is fine.
	ProxyHealthPath = "/xlb-health"
	// ProxyMetricsPort serves each proxy's /metrics on its backend's own
	// address.
	ProxyMetricsPort = 9180
	// RedisPort is where the lab's redis-server listens, on the first
	// balancer's address, when Config.L7Redis is set.
	RedisPort = 6379
	// LimitedPath prefixes the rate-limited route.
	LimitedPath = "/limited"
	// ProxyHeader names the proxy (its backend host) in every response
	// forwarded by it.
	ProxyHeader = "X-Proxy"
	// StickyCookie is the name of the proxies' sticky cookie.
	StickyCookie = "xlb_sticky"

	// MaxL7Rate and MaxL7Burst bound L7Config.Rate and Burst (the
	// proxy's own bound on burst).
	MaxL7Rate  = 1000000
	MaxL7Burst = 1000000

	defaultL7Rate  = 20
	defaultL7Burst = 10
	redisName      = "redis"
)

// L7Config is the L7 tier's part of Config.
type L7Config struct {
	// Rate per second and Burst of the per-client limit on LimitedPath;
	// default 20 and 10.
	Rate, Burst int
	// Redis shares the limit between the proxies through one redis-server
	// the lab runs in the first balancer's namespace; without it every
	// proxy limits on its own.
	Redis bool
	// StickyKey signs the sticky cookies of all proxies; "lab up" makes a
	// random one.
	StickyKey string
}

func (c *L7Config) setDefaults() error {
	if c.Rate == 0 {
		c.Rate = defaultL7Rate
	}
	if c.Burst == 0 {
		c.Burst = defaultL7Burst
	}
	if c.Rate < 1 || c.Rate > MaxL7Rate {
		return fmt.Errorf("l7 rate %d: allowed are 1 to %d", c.Rate, MaxL7Rate)
	}
	if c.Burst < 1 || c.Burst > MaxL7Burst {
		return fmt.Errorf("l7 burst %d: allowed are 1 to %d", c.Burst, MaxL7Burst)
	}
	if c.Redis {
		if _, err := exec.LookPath("redis-server"); err != nil {
			return fmt.Errorf("l7 redis: redis-server not found (scripts/deps.sh installs it): %w", err)
		}
	}
	if c.StickyKey == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("sticky key: %w", err)
		}
		c.StickyKey = hex.EncodeToString(b)
	}
	return nil
}

// ProxyVIP is the L7 tier's VIP address and port.
func ProxyVIP() netip.AddrPort { return netip.AddrPortFrom(VIP4, ProxyPort) }

// RedisAddr is where the lab's redis-server listens (Config.L7Redis).
func (l *Lab) RedisAddr() netip.AddrPort {
	return netip.AddrPortFrom(l.Balancers[0].IPv4, RedisPort)
}

// ProxyPaths are a backend host's proxy files.
type ProxyPaths struct {
	Config string
	Socket string // admin socket
}

// ProxyPaths returns the paths of a backend's proxy.
func (l *Lab) ProxyPaths(backend string) ProxyPaths {
	dir := filepath.Join(l.cfg.StateDir, backend)
	return ProxyPaths{Config: filepath.Join(dir, "proxy.yaml"), Socket: filepath.Join(dir, "proxy.sock")}
}

// ProxyMetrics is where a backend's proxy serves /metrics.
func ProxyMetrics(be Host) netip.AddrPort { return netip.AddrPortFrom(be.IPv4, ProxyMetricsPort) }

func proxyName(backend string) string { return backend + ".proxy" }

// proxyYAML renders the proxy config of one backend host.
func (l *Lab) proxyYAML(be Host) string {
	c := l.cfg.L7
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by the xlb lab: the L7 tier on %s.\n", be.Name)
	// The wildcard address serves the VIP and the host's own address,
	// where the L4 tier's health checks connect.
	fmt.Fprintf(&b, "listeners: [{name: vip, address: \"%s\"}]\n", netip.AddrPortFrom(netip.IPv4Unspecified(), ProxyPort))
	fmt.Fprintf(&b, "admin: {socket: \"%s\", metrics_address: \"%s\"}\n", l.ProxyPaths(be.Name).Socket, ProxyMetrics(be))
	b.WriteString("pools:\n  - name: app\n    algorithm: round_robin\n    backends:\n")
	for _, app := range l.Backends {
		fmt.Fprintf(&b, "      - address: \"%s\"\n", netip.AddrPortFrom(app.IPv4, HTTPPort))
	}
	b.WriteString("    health_check: {kind: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 1, fall: 2, start_healthy: true}\n")
	fmt.Fprintf(&b, "    sticky: {keys: [\"%s\"], name: %s}\n", c.StickyKey, StickyCookie)
	b.WriteString("routes:\n")
	fmt.Fprintf(&b, "  - name: health\n    match: {path: {exact: %s}}\n    respond: {status: 200, body: \"ok\\n\"}\n", ProxyHealthPath)
	fmt.Fprintf(&b, "  - name: limited\n    match: {path: {prefix: %s}}\n    pool: app\n    response_headers: {set: {%s: %s}}\n", LimitedPath, ProxyHeader, be.Name)
	fmt.Fprintf(&b, "    middleware:\n      - kind: ratelimit\n        config:\n          name: per-client\n          rate: %d\n          burst: %d\n          key: {client: true}\n", c.Rate, c.Burst)
	if c.Redis {
		fmt.Fprintf(&b, "          redis: {address: \"%s\", timeout: 500ms, on_error: fail_closed, backoff: 200ms}\n", l.RedisAddr())
	}
	fmt.Fprintf(&b, "  - name: app\n    pool: app\n    response_headers: {set: {%s: %s}}\n", ProxyHeader, be.Name)
	return b.String()
}

// startL7 starts redis-server (when asked) and a proxy on every backend,
// and waits until each proxy accepts on the VIP inside its host.
func (l *Lab) startL7(ctx context.Context) error {
	if l.Router != nil {
		return fmt.Errorf("l7: not supported with a routed lab")
	}
	if l.cfg.L7.Redis {
		if err := l.startRedis(ctx); err != nil {
			return err
		}
	}
	for _, be := range l.Backends {
		if err := l.StartProxy(be.Name); err != nil {
			return err
		}
	}
	for _, be := range l.Backends {
		if err := l.waitTCP(ctx, be.Netns, ProxyVIP(), proxyName(be.Name)); err != nil {
			return err
		}
	}
	return nil
}

// StartProxy writes a backend's proxy config and starts "xlb proxy" there.
func (l *Lab) StartProxy(backend string) error {
	h, ok := l.Host(backend)
	if !ok || h.Role != RoleBackend {
		return fmt.Errorf("backend %q: no such backend in the lab", backend)
	}
	p := l.ProxyPaths(backend)
	if err := os.MkdirAll(filepath.Dir(p.Config), 0o755); err != nil {
		return fmt.Errorf("start proxy in %s: %w", backend, err)
	}
	if err := os.WriteFile(p.Config, []byte(l.proxyYAML(h)), 0o600); err != nil {
		return fmt.Errorf("start proxy in %s: %w", backend, err)
	}
	_, err := startProcess(l.cfg.StateDir, h.Netns, proxyName(backend), l.cfg.Binary, "proxy", "--config", p.Config, "--log-level", "warn")
	return err
}

// StopProxy stops a backend's proxy.
func (l *Lab) StopProxy(backend string) error { return stopProcess(l.cfg.StateDir, proxyName(backend)) }

func (l *Lab) startRedis(ctx context.Context) error {
	lb := l.Balancers[0]
	dir := filepath.Join(l.cfg.StateDir, redisName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start redis: %w", err)
	}
	addr := l.RedisAddr()
	if _, err := startProcess(l.cfg.StateDir, lb.Netns, redisName, "redis-server",
		"--bind", addr.Addr().String(), "--port", strconv.Itoa(int(addr.Port())),
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir); err != nil {
		return err
	}
	return l.waitTCP(ctx, lb.Netns, addr, redisName)
}

// waitTCP waits until addr accepts a connection from ns.
func (l *Lab) waitTCP(ctx context.Context, ns hostnet.Netns, addr netip.AddrPort, name string) error {
	c := Client{Netns: ns, Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := c.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(l.cfg.StateDir, name+".log"))
			return fmt.Errorf("%s does not accept on %s: %v; log:\n%s", name, addr, err, tail(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ClientSource returns the i-th extra client address (0-based), on the
// client's link, for tests that need clients with distinct addresses.
func ClientSource(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(201 + i)})
}

// AddClientSources adds n addresses (ClientSource(0..n-1)) to the client
// host's link, so that sockets bound to them are distinct clients to the
// backends, which answer them directly on the segment.
func (l *Lab) AddClientSources(n int) ([]netip.Addr, error) {
	if l.Router != nil {
		return nil, fmt.Errorf("client sources: not supported with a routed lab")
	}
	if n < 1 || n > 50 {
		return nil, fmt.Errorf("client sources %d: allowed are 1 to 50", n)
	}
	nh, err := l.Client.Netns.Handle()
	if err != nil {
		return nil, fmt.Errorf("client sources: %w", err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(Ifname)
	if err != nil {
		return nil, fmt.Errorf("client sources: %w", err)
	}
	var out []netip.Addr
	for i := range n {
		a := ClientSource(i)
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(hostNet4Bits, 32)}}
		if err := nh.AddrReplace(link, addr); err != nil {
			return nil, fmt.Errorf("client source %s: %w", a, err)
		}
		out = append(out, a)
	}
	return out, nil
}

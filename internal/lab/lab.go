package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultPrefix   = "xlb-"
	DefaultStateDir = "/run/xlb-lab"
	DefaultBackends = 3
	// BPFFS is where the lab's daemons pin, one directory per balancer:
	// BPFFS/PREFIXlb1.
	BPFFS = "/sys/fs/bpf"
)

// Config describes a lab.
type Config struct {
	// Prefix starts every namespace name; default DefaultPrefix. Tests use
	// their own ("xlbt-PID-N-") so that they never meet "xlb lab up".
	Prefix string
	// Balancers is the number of balancer hosts; default 1.
	Balancers int
	// Backends is the number of backend hosts; default DefaultBackends.
	Backends int
	// StateDir holds pid files, logs and daemon state; default
	// DefaultStateDir/PREFIX.
	StateDir string
	// Binary is the xlb binary run for echo servers, backend-host setup
	// and daemons; default this executable.
	Binary string
	// NoDecap skips attaching the decapsulation program to the backends
	// (enough for L2 DSR).
	NoDecap bool
	// Routed puts a router namespace between the client and the
	// balancers (router.go); StartRouter runs FRR in it.
	Routed bool
	// L7, when set, runs "xlb proxy" on every backend host behind the VIP
	// (l7.go): the L4 tier in front of the L7 tier.
	L7 *L7Config
	// Log receives progress; nil discards.
	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Balancers == 0 {
		c.Balancers = 1
	}
	if c.Backends == 0 {
		c.Backends = DefaultBackends
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(DefaultStateDir, strings.TrimSuffix(c.Prefix, "-"))
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	bin, err := execPath(c.Binary)
	if err != nil {
		return err
	}
	c.Binary = bin
	if c.L7 != nil {
		if err := c.L7.setDefaults(); err != nil {
			return err
		}
	}
	return nil
}

// Lab is a running lab: the topology, the backends prepared for direct
// server return and an echo server in each backend.
type Lab struct {
	*Topology
	cfg Config
}

// record is what the state directory remembers of a lab, so that "lab down"
// in another process finds what "lab up" made.
type record struct {
	Prefix    string    `json:"prefix"`
	Balancers int       `json:"balancers"`
	Backends  int       `json:"backends"`
	Binary    string    `json:"binary"`
	NoDecap   bool      `json:"no_decap"`
	Routed    bool      `json:"routed,omitempty"`
	L7        *L7Config `json:"l7,omitempty"`
}

const recordFile = "lab.json"

// Up builds a lab: namespaces and links, backend hosts set up with "xlb
// backend-host setup" for both VIPs, an echo server in every backend, and
// with Config.L7 a proxy in every backend (and redis-server when asked).
// Daemons are started separately (StartDaemon). On failure everything made
// so far is removed.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab state dir: %w", err)
	}
	topo, err := BuildTopology(cfg.Prefix, cfg.Balancers, cfg.Backends, cfg.Routed)
	if err != nil {
		return nil, err
	}
	l := &Lab{Topology: topo, cfg: cfg}
	rec := record{Prefix: cfg.Prefix, Balancers: cfg.Balancers, Backends: cfg.Backends, Binary: cfg.Binary, NoDecap: cfg.NoDecap, Routed: cfg.Routed, L7: cfg.L7}
	if err := writeJSON(filepath.Join(cfg.StateDir, recordFile), rec); err != nil {
		_ = l.Down()
		return nil, err
	}
	if err := l.setupBackends(ctx); err != nil {
		_ = l.Down()
		return nil, err
	}
	if cfg.L7 != nil {
		if err := l.startL7(ctx); err != nil {
			_ = l.Down()
			return nil, err
		}
	}
	cfg.Log.Info("lab up", "prefix", cfg.Prefix, "balancers", cfg.Balancers, "backends", cfg.Backends, "state_dir", cfg.StateDir)
	return l, nil
}

// Open returns the lab that "lab up" recorded in stateDir (default for the
// default prefix), for commands run in another process.
func Open(stateDir string, log *slog.Logger) (*Lab, error) {
	if stateDir == "" {
		stateDir = filepath.Join(DefaultStateDir, strings.TrimSuffix(DefaultPrefix, "-"))
	}
	b, err := os.ReadFile(filepath.Join(stateDir, recordFile))
	if err != nil {
		return nil, fmt.Errorf("open lab: %w (is it up? run 'xlb lab up')", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("open lab: parse %s: %w", recordFile, err)
	}
	topo, err := plan(rec.Prefix, rec.Balancers, rec.Backends, rec.Routed)
	if err != nil {
		return nil, err
	}
	cfg := Config{Prefix: rec.Prefix, Balancers: rec.Balancers, Backends: rec.Backends, StateDir: stateDir, Binary: rec.Binary, NoDecap: rec.NoDecap, Routed: rec.Routed, L7: rec.L7, Log: log}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := topo.readMACs(); err != nil {
		return nil, err
	}
	return &Lab{Topology: topo, cfg: cfg}, nil
}

func (t *Topology) readMACs() error {
	for i := range t.Hosts() {
		h := t.hostAt(i)
		nh, err := h.Netns.Handle()
		if err != nil {
			return fmt.Errorf("open lab host %s: %w", h.Name, err)
		}
		link, err := nh.LinkByName(Ifname)
		nh.Close()
		if err != nil {
			return fmt.Errorf("open lab host %s: %w", h.Name, err)
		}
		h.MAC = link.Attrs().HardwareAddr
	}
	return nil
}

// Config returns the lab's configuration with defaults filled in.
func (l *Lab) Config() Config { return l.cfg }

// StateDir is where the lab keeps pid files, logs and daemon state.
func (l *Lab) StateDir() string { return l.cfg.StateDir }

func (l *Lab) setupBackends(ctx context.Context) error {
	for _, be := range l.Backends {
		args := []string{"backend-host", "setup", "--iface", Ifname, "--vip", VIP4.String(), "--vip", VIP6.String(),
			"--state-file", filepath.Join(l.cfg.StateDir, be.Name+".backend-host.json")}
		if l.cfg.NoDecap {
			args = append(args, "--decap=false")
		} else if l.Router != nil {
			// The client's link takes the upper half of the default
			// 192.0.2.0/24: trust only the balancers' half.
			args = append(args, "--balancer-source", RoutedOuterSource4.String(), "--balancer-source", OuterSource6.String())
		}
		if out, err := l.Command(ctx, be.Name, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("set up backend host %s: %w: %s", be.Name, err, strings.TrimSpace(string(out)))
		}
		if err := l.StartServer(be.Name); err != nil {
			return err
		}
	}
	for _, be := range l.Backends {
		if err := l.waitServer(ctx, be); err != nil {
			return err
		}
	}
	return nil
}

// Command returns the xlb binary with args, run in host's network namespace
// only and killed when ctx ends.
func (l *Lab) Command(ctx context.Context, host string, args ...string) *exec.Cmd {
	h, _ := l.Host(host)
	base := h.Netns.Command(l.cfg.Binary, args...)
	return exec.CommandContext(ctx, base.Path, base.Args[1:]...)
}

// StartServer starts the echo server of a backend ("xlb lab serve").
func (l *Lab) StartServer(backend string) error {
	h, ok := l.Host(backend)
	if !ok || h.Role != RoleBackend {
		return fmt.Errorf("backend %q: no such backend in the lab", backend)
	}
	_, err := startProcess(l.cfg.StateDir, h.Netns, serverName(backend), l.cfg.Binary, "lab", "serve", "--name", backend)
	return err
}

// StopServer stops the echo server of a backend.
func (l *Lab) StopServer(backend string) error {
	return stopProcess(l.cfg.StateDir, serverName(backend))
}

// KillServer kills the echo server of a backend at once (SIGKILL).
func (l *Lab) KillServer(backend string) error {
	return killProcess(l.cfg.StateDir, serverName(backend))
}

func serverName(backend string) string { return backend + ".serve" }

// waitServer waits until the backend's echo server answers on its own
// address.
func (l *Lab) waitServer(ctx context.Context, be Host) error {
	c := Client{Netns: be.Netns, Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for {
		name, err := c.Hello(netip.AddrPortFrom(be.IPv4, EchoPort))
		if err == nil && name == be.Name {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("echo server of %s did not come up (log %s): %v", be.Name,
				filepath.Join(l.cfg.StateDir, serverName(be.Name)+".log"), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Down stops every process the lab started, deletes its namespaces and
// pins and removes its state directory.
func (l *Lab) Down() error {
	return Down(l.cfg.Prefix, l.cfg.StateDir)
}

// Down removes a lab by its prefix and state directory, also when the
// process that built it crashed half-way: processes from pid files first,
// then anything still running in the namespaces, the namespaces, the pins
// under BPFFS/PREFIX*, and the state directory.
func Down(prefix, stateDir string) error {
	if prefix == "" {
		return errors.New("prefix: required")
	}
	var errs []error
	if entries, err := os.ReadDir(stateDir); err == nil {
		for _, e := range entries {
			if name, ok := strings.CutSuffix(e.Name(), ".pid"); ok {
				if err := stopProcess(stateDir, name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := DestroyPrefix(prefix); err != nil {
		errs = append(errs, err)
	}
	if pins, err := filepath.Glob(filepath.Join(BPFFS, prefix+"*")); err == nil {
		for _, p := range pins {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove pins %s: %w", p, err))
			}
		}
	}
	if err := os.RemoveAll(stateDir); err != nil {
		errs = append(errs, fmt.Errorf("remove lab state: %w", err))
	}
	if filepath.Dir(stateDir) == DefaultStateDir {
		_ = os.Remove(DefaultStateDir) // only when no other lab is up
	}
	return errors.Join(errs...)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/internal/testutil"
)

// daemonCaps are the capabilities xlb.service grants the daemon
// (packaging/systemd/xlb.service, CapabilityBoundingSet=), in setpriv's
// spelling. Each one's reason is in docs/operating.md; the test below shows
// the daemon does its whole job with only these, and fails without each.
var daemonCaps = []string{"bpf", "net_admin", "perfmon", "chown"}

// capsWrapper writes a script that runs the real xlb binary as root with
// only caps in its bounding set, as systemd does with
// CapabilityBoundingSet= and User=root: what an execve by root keeps.
func capsWrapper(t *testing.T, caps []string) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop capabilities: %v", err)
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	path := filepath.Join(t.TempDir(), "xlb-caps")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set=%s --inh-caps=-all --no-new-privs -- %s \"$@\"\n", setpriv, set, buildXLB(t))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// ensureBPFFS mounts bpffs at BPFFS when it is not mounted, as systemd does
// at boot (sys-fs-bpf.mount): a daemon without CAP_SYS_ADMIN cannot mount it.
// It stays mounted, as the daemon itself would leave it: pins of other
// processes may live there.
func ensureBPFFS(t *testing.T) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil && !errors.Is(err, unix.EBUSY) {
		t.Fatalf("mount bpffs at %s: %v", BPFFS, err)
	}
}

// TestDaemonCapabilities runs the daemon with exactly the capabilities of
// xlb.service: it loads and attaches the datapath, health-checks the
// backends, forwards traffic, drains a backend, and after a restart adopts
// its own pins. Then it runs it once without each capability and expects
// the daemon to fail, so the unit grants none it does not need.
func TestDaemonCapabilities(t *testing.T) {
	l := newLab(t, Config{Backends: 2})
	ensureBPFFS(t)
	dc := DaemonConfig{}
	p := l.DaemonPaths("lb1")
	lb, _ := l.Host("lb1")
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Config, []byte(l.daemonYAML(lb, p, dc)), 0o644); err != nil {
		t.Fatal(err)
	}
	// socket_group makes the daemon chown its socket to a group it is not
	// a member of (CAP_CHOWN), as xlb.service does with group xlb; the
	// lab's config has none, so add nogroup, which Debian always has.
	if err := appendFile(p.Config, "socket_group: nogroup\n"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("without", func(t *testing.T) {
		for _, drop := range daemonCaps {
			var rest []string
			for _, c := range daemonCaps {
				if c != drop {
					rest = append(rest, c)
				}
			}
			if log, started := daemonFails(t, l, capsWrapper(t, rest), p); started {
				t.Errorf("daemon without CAP_%s opened its socket; the unit would grant a capability it does not need", strings.ToUpper(drop))
			} else {
				t.Logf("without CAP_%s: %s", strings.ToUpper(drop), lastLine(log))
			}
			// A failed start may have pinned part of the datapath.
			if out, err := exec.Command(buildXLB(t), "daemon", "--cleanup", "--bpffs", p.BPFFS).CombinedOutput(); err != nil {
				t.Fatalf("cleanup: %v\n%s", err, out)
			}
		}
	})

	wrapper := capsWrapper(t, daemonCaps)
	for _, round := range []string{"fresh load", "adopting its pins"} {
		if err := l.RunDaemon(ctx, "lb1", wrapper); err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		want := len(l.Backends) * len(dc.VIPs())
		testutil.Eventually(t, 15*time.Second, round+": every backend healthy and usable", func() bool {
			n := 0
			for _, be := range listBackends(t, l, "lb1", "") {
				if be.Health == "healthy" && be.UsableNew && be.NextHopErr == "" {
					n++
				}
			}
			return n == want
		})
		c := Client{Netns: l.Client.Netns}
		seen := map[string]int{}
		for range 20 {
			name, err := c.Hello(echoVIP)
			if err != nil {
				t.Fatalf("%s: connection through the VIP: %v", round, err)
			}
			seen[name]++
		}
		if len(seen) != len(l.Backends) {
			t.Errorf("%s: 20 connections reached %v, want every backend", round, seen)
		}
		if err := l.StopDaemon("lb1"); err != nil {
			t.Fatal(err)
		}
	}
	// The drain is a map write by the restarted, capability-limited daemon.
	if err := l.RunDaemon(ctx, "lb1", wrapper); err != nil {
		t.Fatal(err)
	}
	be := addrOf(l, "be1")
	cli(t, l, "lb1", "backend", "drain", vipTCP, be)
	testutil.Eventually(t, 5*time.Second, "drain applied", func() bool {
		for _, b := range listBackends(t, l, "lb1", vipTCP) {
			if b.Address == be {
				return b.Admin == "draining" && !b.UsableNew
			}
		}
		return false
	})
	c := Client{Netns: l.Client.Netns}
	for range 20 {
		name, err := c.Hello(echoVIP)
		if err != nil {
			t.Fatal(err)
		}
		if name == "be1" {
			t.Fatal("a new connection reached the drained be1")
		}
	}
	if err := l.StopDaemon("lb1"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(buildXLB(t), "daemon", "--cleanup", "--bpffs", p.BPFFS).CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
}

// daemonFails runs the daemon through wrapper in the balancer's namespace
// and reports whether it opened its API socket (it is then stopped), or
// else its output once it exited.
func daemonFails(t *testing.T, l *Lab, wrapper string, p DaemonPaths) (string, bool) {
	t.Helper()
	h, _ := l.Host("lb1")
	_ = os.Remove(p.Socket)
	var out strings.Builder
	cmd := h.Netns.Command(wrapper, "daemon", "--config", p.Config)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case <-exited:
			return out.String(), false
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("daemon neither opened its socket nor exited in 15s; output:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
			if _, err := os.Stat(p.Socket); err == nil {
				_ = cmd.Process.Signal(unix.SIGTERM)
				<-exited
				return out.String(), true
			}
		}
	}
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

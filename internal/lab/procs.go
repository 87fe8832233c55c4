package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xlb-project/xlb/internal/hostnet"
)

// Processes the lab starts (echo servers, daemons) run detached, in their
// own session, with only the network namespace switched (nsenter --net), so
// they outlive "xlb lab up". Each has a pid file NAME.pid and a log NAME.log
// in the lab's state directory; "lab down" stops them through the pid files
// and then kills whatever else still runs in the lab's namespaces.

// stopGrace is how long a stopped process has to exit before SIGKILL.
const stopGrace = 3 * time.Second

// startProcess starts argv in ns, detached, recording its pid under dir.
func startProcess(dir string, ns hostnet.Netns, name string, argv ...string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	cmd := ns.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	// The child is reaped by whoever stops it, or by init once this
	// process exits; Release keeps os/exec from tracking it.
	go func() { _, _ = cmd.Process.Wait() }()
	if err := os.WriteFile(pidFile(dir, name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	return pid, nil
}

func pidFile(dir, name string) string { return filepath.Join(dir, name+".pid") }

// stopProcess stops the process recorded as name under dir (SIGTERM, then
// SIGKILL after stopGrace) and removes its pid file. A process that is gone
// already is not an error.
func stopProcess(dir, name string) error {
	return signalProcess(dir, name, syscall.SIGTERM, true)
}

// killProcess kills the process recorded as name at once, as a crash would.
func killProcess(dir, name string) error {
	return signalProcess(dir, name, syscall.SIGKILL, true)
}

func signalProcess(dir, name string, sig syscall.Signal, wait bool) error {
	b, err := os.ReadFile(pidFile(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("stop %s: bad pid file: %w", name, err)
	}
	if processAlive(pid) && ownProcess(pid) {
		if err := terminate(pid, sig); err != nil {
			return fmt.Errorf("stop %s (pid %d): %w", name, pid, err)
		}
	}
	if err := os.Remove(pidFile(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// ownProcess guards against a recycled pid: the lab only ever starts xlb
// FRR's daemons and redis-server (directly or through nsenter).
func ownProcess(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(b, []byte{0})
	base := filepath.Base(string(argv0))
	return strings.Contains(base, "xlb") || base == "nsenter" || strings.HasSuffix(base, ".test") ||
		base == "zebra" || base == "bgpd" || base == "redis-server"
}

func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// terminate sends sig and waits for the process to exit, escalating to
// SIGKILL after stopGrace.
func terminate(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(stopGrace)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
			deadline = time.Now().Add(stopGrace)
			sig = syscall.SIGKILL
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// killNetnsProcs kills every process whose network namespace is ns, like
// "ip netns pids" followed by kill: the sweep for processes whose pid file
// was lost with a crashed "lab up".
func killNetnsProcs(ns hostnet.Netns) error {
	var target syscall.Stat_t
	if err := syscall.Stat(ns.Path(), &target); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("stat netns %s: %w", ns.Name, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if st.Dev == target.Dev && st.Ino == target.Ino {
			if err := terminate(pid, syscall.SIGTERM); err != nil {
				errs = append(errs, fmt.Errorf("kill pid %d in netns %s: %w", pid, ns.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// execPath returns the binary to run for argv[0] "xlb": the given path, or
// this executable.
func execPath(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find xlb binary: %w", err)
	}
	return p, nil
}

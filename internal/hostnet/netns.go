// Package hostnet wraps the netlink work xlb does on a host: network
// namespaces, links, addresses, routes, neighbours and sysctls. It is used by
// the daemon (next-hop MACs), the backend-host setup and the lab.
package hostnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// "ip netns add".
const NetnsDir = "/run/netns"

// Netns is a named network namespace.
type Netns struct {
	Name string
}

// Path is the bind mount of the namespace, usable with nsenter --net=PATH.
func (n Netns) Path() string { return filepath.Join(NetnsDir, n.Name) }

// CreateNetns creates a named network namespace without moving the caller
// into it. It fails if the name is taken.
func CreateNetns(name string) (Netns, error) {
	if _, err := os.Stat(filepath.Join(NetnsDir, name)); err == nil {
		return Netns{}, fmt.Errorf("create netns %s: %w", name, os.ErrExist)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return Netns{}, fmt.Errorf("create netns %s: get current: %w", name, err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return Netns{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: it must not run other
		// goroutines. Returning without unlocking makes the runtime kill it.
		runtime.Goexit()
	}
	n := Netns{Name: name}
	if err := n.SetLinkUp("lo"); err != nil {
		_ = n.Delete()
		return Netns{}, err
	}
	return n, nil
}

// Delete removes the namespace's bind mount. Links inside it disappear with
// the namespace once no process holds it.
func (n Netns) Delete() error {
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

// Exists reports whether the namespace's bind mount is present.
func (n Netns) Exists() bool {
	_, err := os.Stat(n.Path())
	return err == nil
}

// Do runs fn on a locked OS thread switched into the namespace. fn must not
// start goroutines that expect to be in the namespace.
func (n Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: get current: %w", n.Name, err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked so the runtime discards it.
		return fmt.Errorf("leave netns %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Command returns a command that runs in the namespace with only the network
// namespace switched (nsenter --net), so the mount namespace and with it a
// bpffs mounted at /sys/fs/bpf stay shared with the host. "ip netns exec"
// would remount /sys and hide pins. The zero Netns runs the command in the
// caller's namespace.
func (n Netns) Command(name string, args ...string) *exec.Cmd {
	if n.Name == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// Handle opens a netlink handle operating inside the namespace. The caller
// closes it.
func (n Netns) Handle() (*netlink.Handle, error) {
	ns, err := netns.GetFromName(n.Name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in netns %s: %w", n.Name, err)
	}
	return h, nil
}

// SetLinkUp brings a link inside the namespace up.
func (n Netns) SetLinkUp(ifname string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: find link %s: %w", n.Name, ifname, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("netns %s: set %s up: %w", n.Name, ifname, err)
	}
	return nil
}

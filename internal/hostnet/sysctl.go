package hostnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// procSys is where the kernel exposes sysctls. Files under net/ show the
// network namespace of the thread that opens them.
const procSys = "/proc/sys"

// sysctlPath turns a sysctl name into its file under /proc/sys. The name is
// either dotted ("net.ipv4.conf.all.rp_filter") or slash-separated
// ("net/ipv4/conf/eth0.100/rp_filter", needed when an interface name contains
// a dot), as sysctl(8) accepts.
func sysctlPath(name string) (string, error) {
	if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("sysctl name %q: allowed are dotted or slash-separated names such as net.ipv4.conf.all.rp_filter", name)
	}
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	return filepath.Join(procSys, name), nil
}

// ConfSysctl names a per-interface IPv4 setting, safe for interface names
// that contain dots: ConfSysctl("all", "arp_ignore").
func ConfSysctl(ifname, key string) string {
	return "net/ipv4/conf/" + ifname + "/" + key
}

// ReadSysctl returns the value of a sysctl in the calling thread's network
// namespace, without the trailing newline.
func ReadSysctl(name string) (string, error) {
	p, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl sets a sysctl in the calling thread's network namespace.
func WriteSysctl(name, value string) error {
	p, err := sysctlPath(name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// ReadSysctl returns the value of a sysctl inside the namespace.
func (n Netns) ReadSysctl(name string) (string, error) {
	var v string
	err := n.do(func() error {
		var err error
		v, err = ReadSysctl(name)
		return err
	})
	return v, err
}

// WriteSysctl sets a sysctl inside the namespace.
func (n Netns) WriteSysctl(name, value string) error {
	return n.do(func() error { return WriteSysctl(name, value) })
}

// do runs fn in the namespace, or directly for the zero Netns.
func (n Netns) do(fn func() error) error {
	if n.Name == "" {
		return fn()
	}
	return n.Do(fn)
}

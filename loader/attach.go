package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
)

// linkPin is the pin name of the xdp_lb link on ifname. Interface names
// are unique per network namespace only: use one PinDir per namespace.
func (d *Datapath) linkPin(ifname string) string {
	return filepath.Join(d.pinDir, "link_"+ifname)
}

// Attach attaches xdp_lb to ifname (in the calling thread's network
// namespace) through a bpf_link, in native mode, or in generic mode when
// asked. With a PinDir the link is pinned, and when a pinned link to the
// same interface exists, the program is replaced through it atomically:
// no packet is missed and the maps stay.
func (d *Datapath) Attach(ifname string, generic bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	if _, ok := d.links[ifname]; ok {
		return fmt.Errorf("attach xdp to %s: %w: already attached by this process", ifname, ErrInvalid)
	}
	if d.pinDir != "" {
		replaced, err := d.replacePinned(ifname, iface.Index)
		if err != nil || replaced {
			return err
		}
	}
	flags := link.XDPDriverMode
	if generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: iface.Index, Flags: flags})
	if err != nil {
		return fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	if d.pinDir != "" {
		if err := l.Pin(d.linkPin(ifname)); err != nil {
			l.Close()
			return fmt.Errorf("pin xdp link of %s: %w", ifname, err)
		}
	}
	d.links[ifname] = l
	return nil
}

// replacePinned updates a pinned link on ifindex to the new program. A
// pinned link whose interface is gone or another is removed.
func (d *Datapath) replacePinned(ifname string, ifindex int) (bool, error) {
	path := d.linkPin(ifname)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open pinned xdp link %s: %w", path, err)
	}
	info, err := l.Info()
	if err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifindex {
		if err := l.Update(d.objs.XdpLb); err != nil {
			l.Close()
			return false, fmt.Errorf("replace xdp program on %s: %w", ifname, err)
		}
		d.links[ifname] = l
		return true, nil
	}
	// Stale: its interface went away (ifindex 0) or was recreated.
	_ = l.Unpin()
	l.Close()
	return false, nil
}

// Detach detaches xdp_lb from every interface this Datapath attached it to
// and removes the pinned links.
func (d *Datapath) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.links) == 0 {
		return ErrNotAttached
	}
	var errs []error
	for name, l := range d.links {
		if err := l.Detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp from %s: %w", name, err))
		}
		if d.pinDir != "" {
			if err := os.Remove(d.linkPin(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin xdp link of %s: %w", name, err))
			}
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp from %s: %w", name, err))
		}
		delete(d.links, name)
	}
	return errors.Join(errs...)
}

// Netlink XDP attach flags (linux/if_link.h).
const (
	xdpFlagsSKBMode = 1 << 1
	xdpFlagsDrvMode = 1 << 2
	xdpAttachedSKB  = 2 // IFLA_XDP_ATTACHED value for generic mode
)

package hostnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
)

// DefaultBackendHostState is where "xlb backend-host setup" records what it
// changed, so that teardown undoes exactly that.
const DefaultBackendHostState = "/run/xlb/backend-host.json"

// Decap attaches the backend side's decapsulation XDP program so that it
// stays attached after the process exits, checks it, and detaches it again.
// The loader implements it; hostnet knows nothing of BPF.
type Decap interface {
	// Attach makes sure the program is attached to ifname as configured,
	// looking at the kernel, not at any record: added is false when it was
	// in place already and nothing was done. Another XDP program on ifname
	// is an error.
	Attach(ifname string) (added bool, err error)
	// Detach removes the program from ifname; detaching from an interface
	// with no program is not an error.
	Detach(ifname string) error
	// Check reports whether the program is attached to ifname as
	// configured, what is there, and its counters.
	Check(ifname string) (BackendHostCheck, error)
}

// BackendHost prepares a host behind the balancer for direct server return:
// the VIPs on lo (so the host accepts packets to them and answers from
// them), the sysctls that keep it from answering ARP for them or dropping
// packets whose source it would not route back the same way, and the
// decapsulation program on the interface the balancer sends to.
type BackendHost struct {
	// Netns is the namespace to prepare; the zero value is the caller's.
	Netns Netns
	// Iface receives the balancer's packets; required.
	Iface string
	// VIPs are added to lo as /32 or /128; at least one is required.
	VIPs []netip.Addr
	// StateFile records what setup changed; default
	// DefaultBackendHostState. Hosts sharing a filesystem (network
	// namespaces) need one file each.
	StateFile string
	// Decap attaches the decapsulation program; nil skips that step (L2 DSR
	// needs no decapsulation).
	Decap Decap
	// DecapConfig is recorded in the state file for status (see
	// BackendHostWant).
	DecapConfig json.RawMessage
	// Log receives one line per change; nil discards.
	Log *slog.Logger
}

// BackendHostState is what setup changed, and what it was asked for (so
// that status can check the host against it), persisted as JSON.
type BackendHostState struct {
	Iface   string         `json:"iface"`
	VIPs    []netip.Addr   `json:"vips_added"`
	Sysctls []SysctlChange `json:"sysctls_changed"`
	Decap   bool           `json:"decap_attached"`
	// Want is the last setup's request.
	Want BackendHostWant `json:"want"`
}

// BackendHostWant is what a setup was asked to put in place.
type BackendHostWant struct {
	VIPs  []netip.Addr `json:"vips"`
	Decap bool         `json:"decap"`
	// DecapConfig is the decapsulation program's configuration as the
	// caller records it (opaque to hostnet).
	DecapConfig json.RawMessage `json:"decap_config,omitempty"`
}

// SysctlChange is one sysctl setup changed, with the value it had before.
type SysctlChange struct {
	Name     string `json:"name"`
	Previous string `json:"previous"`
	Value    string `json:"value"`
}

// dsrSysctls are the settings a DSR backend needs on iface. The kernel uses
// the larger of conf/all and conf/IFACE for each of them.
func dsrSysctls(iface string) []SysctlChange {
	return []SysctlChange{
		// Answer ARP only for addresses on the interface asked on, never
		// for the VIPs on lo: the balancer owns the VIPs on the segment.
		{Name: ConfSysctl("all", "arp_ignore"), Value: "1"},
		// Source ARP requests from the outgoing interface's own address,
		// never a VIP.
		{Name: ConfSysctl("all", "arp_announce"), Value: "2"},
		// The decapsulated packet's source (the client) may be one this
		// host would not route back out of iface.
		{Name: ConfSysctl("all", "rp_filter"), Value: "0"},
		{Name: ConfSysctl(iface, "rp_filter"), Value: "0"},
	}
}

func (b *BackendHost) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

func (b *BackendHost) stateFile() string {
	if b.StateFile == "" {
		return DefaultBackendHostState
	}
	return b.StateFile
}

// validate checks the input and the host before anything is changed.
func (b *BackendHost) validate(prev *BackendHostState) error {
	if b.Iface == "" {
		return errors.New("iface: required, the interface the balancer sends to")
	}
	if len(b.VIPs) == 0 {
		return errors.New("vip: at least one VIP address is required")
	}
	for _, v := range b.VIPs {
		if !v.IsValid() || v.IsUnspecified() || v.IsMulticast() || v.IsLoopback() {
			return fmt.Errorf("vip %q: allowed are unicast IPv4 or IPv6 addresses", v)
		}
	}
	if prev != nil && prev.Iface != b.Iface {
		return fmt.Errorf("iface %q: this host was set up for %q (state %s); run teardown first", b.Iface, prev.Iface, b.stateFile())
	}
	h, err := handleFor(b.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.LinkByName(b.Iface); err != nil {
		return fmt.Errorf("iface %q: no such interface: %w", b.Iface, err)
	}
	return nil
}

// Setup prepares the host and records every change in the state file before
// making it, so that Teardown undoes exactly what was done even when setup
// stopped half-way. It looks at the kernel, not at the state file, for what
// is in place: running it again changes nothing that is there and repairs
// what is missing (a detached program, a recreated interface, a VIP removed
// from lo, a sysctl changed back).
func (b *BackendHost) Setup() (*BackendHostState, error) {
	prev, err := LoadBackendHostState(b.stateFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := b.validate(prev); err != nil {
		return nil, err
	}
	st := prev
	if st == nil {
		st = &BackendHostState{Iface: b.Iface}
	}
	st.Want = BackendHostWant{VIPs: b.VIPs, Decap: b.Decap != nil, DecapConfig: b.DecapConfig}
	if err := st.save(b.stateFile()); err != nil {
		return st, err
	}
	log := b.log()

	for _, want := range dsrSysctls(b.Iface) {
		cur, err := b.Netns.ReadSysctl(want.Name)
		if err != nil {
			return st, err
		}
		if cur == want.Value {
			continue
		}
		want.Previous = cur
		if i := slices.IndexFunc(st.Sysctls, func(c SysctlChange) bool { return c.Name == want.Name }); i >= 0 {
			// Changed back by someone since our setup: keep the value
			// recorded first, which is what the host had before us.
			want.Previous = st.Sysctls[i].Previous
			st.Sysctls[i] = want
		} else {
			st.Sysctls = append(st.Sysctls, want)
		}
		if err := st.save(b.stateFile()); err != nil {
			return st, err
		}
		if err := b.Netns.WriteSysctl(want.Name, want.Value); err != nil {
			return st, err
		}
		log.Info("set sysctl", "name", want.Name, "value", want.Value, "previous", want.Previous)
	}

	if err := b.addVIPs(st); err != nil {
		return st, err
	}

	if b.Decap != nil {
		if err := b.attachDecap(st); err != nil {
			return st, err
		}
	}
	return st, st.save(b.stateFile())
}

// attachDecap asks the Decap to put its program in place. A program that
// setup attached before (st.Decap) and finds gone is attached again and
// stays setup's to detach; one that was there before any setup stays the
// owner's.
func (b *BackendHost) attachDecap(st *BackendHostState) error {
	ours := st.Decap
	if !ours {
		// Recorded first: a crash between the two leaves teardown trying
		// to detach a program that is not there, which is harmless.
		st.Decap = true
		if err := st.save(b.stateFile()); err != nil {
			return err
		}
	}
	added, err := b.Decap.Attach(b.Iface)
	if err != nil || (!added && !ours) {
		st.Decap = ours
		if serr := st.save(b.stateFile()); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return fmt.Errorf("attach decap to %s: %w", b.Iface, err)
	}
	switch {
	case added && ours:
		b.log().Warn("decap was missing or configured otherwise; attached again", "ifname", b.Iface)
	case added:
		b.log().Info("attached decap", "ifname", b.Iface)
	}
	return nil
}

func (b *BackendHost) addVIPs(st *BackendHostState) error {
	h, err := handleFor(b.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	have, err := h.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	for _, vip := range b.VIPs {
		vip = vip.Unmap()
		if slices.ContainsFunc(have, func(a netlink.Addr) bool {
			ip, ok := netip.AddrFromSlice(a.IP)
			return ok && ip.Unmap() == vip
		}) {
			continue
		}
		if !slices.Contains(st.VIPs, vip) {
			st.VIPs = append(st.VIPs, vip)
			if err := st.save(b.stateFile()); err != nil {
				return err
			}
		}
		p := netip.PrefixFrom(vip, vip.BitLen())
		addr := &netlink.Addr{IPNet: PrefixToIPNet(p)}
		if vip.Is6() {
			addr.Flags = 0x80 // IFA_F_NODAD
		}
		if err := h.AddrAdd(lo, addr); err != nil {
			return fmt.Errorf("add %s to lo: %w", p, err)
		}
		b.log().Info("added vip to lo", "vip", vip)
	}
	return nil
}

// TeardownBackendHost undoes what setup recorded in stateFile (default
// DefaultBackendHostState) inside ns: detaches the decapsulation program if
// setup attached it, removes the VIPs setup added and restores the sysctls
// setup changed, then removes the state file. With no state file there is
// nothing to undo and it succeeds.
func TeardownBackendHost(ns Netns, stateFile string, decap Decap, log *slog.Logger) error {
	if stateFile == "" {
		stateFile = DefaultBackendHostState
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := LoadBackendHostState(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	if st.Decap {
		if decap == nil {
			errs = append(errs, fmt.Errorf("detach decap from %s: no decap implementation given", st.Iface))
		} else if err := decap.Detach(st.Iface); err != nil {
			errs = append(errs, fmt.Errorf("detach decap from %s: %w", st.Iface, err))
		} else {
			log.Info("detached decap", "ifname", st.Iface)
		}
	}
	if err := removeVIPs(ns, st.VIPs, log); err != nil {
		errs = append(errs, err)
	}
	// Restore in reverse order of setting.
	for i := len(st.Sysctls) - 1; i >= 0; i-- {
		c := st.Sysctls[i]
		if err := ns.WriteSysctl(c.Name, c.Previous); err != nil {
			// An interface that is gone took its settings with it.
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		log.Info("restored sysctl", "name", c.Name, "value", c.Previous)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down backend host (state kept in %s): %w", stateFile, err)
	}
	if err := os.Remove(stateFile); err != nil {
		return fmt.Errorf("remove backend-host state: %w", err)
	}
	return nil
}

func removeVIPs(ns Netns, vips []netip.Addr, log *slog.Logger) error {
	if len(vips) == 0 {
		return nil
	}
	h, err := handleFor(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	have, err := h.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !slices.Contains(vips, ip.Unmap()) {
			continue
		}
		if err := h.AddrDel(lo, &a); err != nil {
			return fmt.Errorf("remove %s from lo: %w", ip, err)
		}
		log.Info("removed vip from lo", "vip", ip)
	}
	return nil
}

// LoadBackendHostState reads a state file written by setup. A missing file
// is reported with an error wrapping os.ErrNotExist.
func LoadBackendHostState(path string) (*BackendHostState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read backend-host state: %w", err)
	}
	var st BackendHostState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse backend-host state %s: %w", path, err)
	}
	return &st, nil
}

// save writes the state atomically: a crash leaves the old or the new file.
func (st *BackendHostState) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save backend-host state: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("save backend-host state: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// writeFileAtomic writes a file through a temporary one, fsync and rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// XDPProgID returns the ID of the XDP program attached to ifname in ns, 0
// when there is none.
func XDPProgID(ns Netns, ifname string) (uint32, error) {
	h, err := handleFor(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("find link %s: %w", ifname, err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId, nil
	}
	return 0, nil
}

package hostnet

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// BackendHostCheck is one thing backend-host setup puts in place, as found
// in the kernel.
type BackendHostCheck struct {
	Item   string `json:"item"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	// Counters are the decapsulation program's, by reason.
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// CheckBackendHost compares the host in ns with what the last setup
// recorded in st asked for: the interface, lo and the VIPs on it, the DSR
// sysctls and, when setup attached one, the decapsulation program (decap
// says how to check it; nil when setup was asked for none). It reads the
// kernel only and changes nothing.
func CheckBackendHost(ns Netns, st *BackendHostState, decap Decap) ([]BackendHostCheck, error) {
	h, err := handleFor(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []BackendHostCheck
	add := func(item string, ok bool, detail string) {
		out = append(out, BackendHostCheck{Item: item, OK: ok, Detail: detail})
	}

	iface, err := h.LinkByName(st.Iface)
	switch {
	case err != nil:
		add("interface "+st.Iface, false, "no such interface")
	case iface.Attrs().Flags&net.FlagUp == 0:
		add("interface "+st.Iface, false, "down")
	default:
		add("interface "+st.Iface, true, fmt.Sprintf("up, index %d, mtu %d", iface.Attrs().Index, iface.Attrs().MTU))
	}

	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	loUp := lo.Attrs().Flags&net.FlagUp != 0
	add("lo", loUp, map[bool]string{true: "up", false: "down"}[loUp])
	have, err := h.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of lo: %w", err)
	}
	vips := st.Want.VIPs
	if len(vips) == 0 {
		vips = st.VIPs // a state file from before setup recorded its request
	}
	for _, vip := range vips {
		vip = vip.Unmap()
		found := slices.ContainsFunc(have, func(a netlink.Addr) bool {
			ip, ok := netip.AddrFromSlice(a.IP)
			return ok && ip.Unmap() == vip
		})
		add("vip "+vip.String()+" on lo", found, map[bool]string{true: "present", false: "missing"}[found])
	}

	for _, want := range dsrSysctls(st.Iface) {
		cur, err := ns.ReadSysctl(want.Name)
		item := "sysctl " + want.Name + " = " + want.Value
		if err != nil {
			add(item, false, err.Error())
			continue
		}
		add(item, cur == want.Value, "is "+cur)
	}

	if st.Want.Decap || st.Decap {
		item := "decap on " + st.Iface
		if decap == nil {
			add(item, false, "no way to check it given")
		} else if c, err := decap.Check(st.Iface); err != nil {
			add(item, false, err.Error())
		} else {
			c.Item = item
			out = append(out, c)
		}
	}
	return out, nil
}

package loader

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// loadRigCount loads xdp_rig_count with the given verdict.
func loadRigCount(verdict Action) (*rigcountObjects, error) {
	spec, err := loadRigcount()
	if err != nil {
		return nil, fmt.Errorf("load xdp_rig_count spec: %w", err)
	}
	if err := spec.Variables[rigcountVarVerdict].Set(uint32(verdict)); err != nil {
		return nil, fmt.Errorf("set xdp_rig_count verdict: %w", err)
	}
	var objs rigcountObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, loadError("xdp_rig_count", err, false)
	}
	return &objs, nil
}

// AttachPass attaches a program that passes every frame to ifname (in the
// calling thread's network namespace) with a netlink XDP attachment, which
// stays while the interface exists. veth hands XDP_TX frames to a peer
// without an XDP program only when something else wakes that peer, so the
// lab attaches this to the bridge-side peer of the balancer's veth.
func AttachPass(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach xdp pass to %s: %w", ifname, err)
	}
	objs, err := loadRigCount(ActionPass)
	if err != nil {
		return err
	}
	defer objs.Close()
	if err := netlink.LinkSetXdpFdWithFlags(l, objs.XdpRigCount.FD(), xdpFlagsDrvMode); err != nil {
		return fmt.Errorf("attach xdp pass to %s: %w", ifname, err)
	}
	return nil
}

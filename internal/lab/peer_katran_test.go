package lab

import (
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/xlb-project/xlb/loader"
)

// katranRigCases are the rig's rows for Katran's XDP balancer when
// XLB_KATRAN_OBJ names its object (built from Katran's source as
// loader/peer_katran.go says; none of it is in this repository), else none:
// the same frames, VIP and backends as xdp_lb's rows, forwarded in IPIP to
// the generator's MAC (Katran's default gateway). Each CPU's flow table has
// the entries of xdp_lb's in rigDatapath.
func katranRigCases(genMAC net.HardwareAddr) []rigCase {
	obj := os.Getenv("XLB_KATRAN_OBJ")
	if obj == "" {
		return nil
	}
	attach := func() (*loader.Program, func(), error) {
		var backends []netip.Addr
		for i := range 3 {
			backends = append(backends, netip.AddrFrom4([4]byte{198, 51, 100, byte(11 + i)}))
		}
		k, err := loader.LoadKatran(loader.KatranOptions{
			Object: obj,
			VIPs: []loader.KatranVIP{
				{Addr: VIP4, Port: HTTPPort, Proto: unix.IPPROTO_TCP},
				{Addr: VIP4, Port: rigDNSPort, Proto: unix.IPPROTO_UDP},
			},
			Backends:      backends,
			GatewayMAC:    genMAC,
			FlowTableSize: rigFlowTableSize,
		})
		if err != nil {
			return nil, nil, err
		}
		l, err := k.Program().AttachRig("rgb")
		if err != nil {
			k.Close()
			return nil, nil, err
		}
		return k.Program(), func() { l.Close(); k.Close() }, nil
	}
	est := loader.RigLoad{Flows: 1024}
	return []rigCase{
		{name: "katran established", flags: tcpACK, load: est, attach: attach},
		{name: "katran new flows (SYN)", flags: tcpSYN, load: loader.RigLoad{NewEvery: 1}, attach: attach},
		{name: "katran new UDP flows", udp: true, load: loader.RigLoad{NewEvery: 1}, attach: attach},
		{name: "katran mixed 90/10", flags: tcpACK, load: loader.RigLoad{Flows: 1024, NewEvery: 10}, attach: attach},
	}
}

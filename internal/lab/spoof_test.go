package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

const spoofPort = 9300

// sendFrames sends Ethernet frames from the client's interface to dstMAC
// through a packet socket.
func sendFrames(l *Lab, dstMAC net.HardwareAddr, etype uint16, payloads ...[]byte) error {
	return l.Client.Netns.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		ifi, err := net.InterfaceByName(Ifname)
		if err != nil {
			return err
		}
		sa := &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], dstMAC)
		for _, p := range payloads {
			frame := append(append(append([]byte{}, dstMAC...), l.Client.MAC...), byte(etype>>8), byte(etype))
			if err := syscall.Sendto(fd, append(frame, p...), 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
}

// tunnelPacket is an IPIP (IPv4) or IP6IP6 (IPv6) packet from outerSrc to
// outerDst carrying a UDP datagram to the VIP's spoofPort from a made-up
// client.
func tunnelPacket(outerSrc, outerDst, vip netip.Addr, payload string) []byte {
	client := netip.MustParseAddr("198.51.100.200")
	if vip.Is6() {
		client = netip.MustParseAddr("2001:db8:1::200")
	}
	inner := testutil.Packet{Src: client, Dst: vip, Proto: testutil.ProtoUDP, SrcPort: 5555, DstPort: spoofPort, Payload: []byte(payload)}.L3()
	if outerSrc.Is4() {
		return append(testutil.IPv4Header(outerSrc, outerDst, testutil.ProtoIPIP, 0, 0, 0, 64, nil, len(inner)), inner...)
	}
	return append(testutil.IPv6Header(outerSrc, outerDst, testutil.ProtoIPv6, 0, 0, 64, len(inner)), inner...)
}

// statusCheck is one row of "xlb backend-host status -o json".
type statusCheck struct {
	Item     string            `json:"item"`
	OK       bool              `json:"ok"`
	Detail   string            `json:"detail"`
	Counters map[string]uint64 `json:"counters"`
}

// backendHostStatus runs "xlb backend-host status -o json" on a lab backend
// and returns its checks and whether it exited 0.
func backendHostStatus(t *testing.T, l *Lab, backend string) ([]statusCheck, bool) {
	t.Helper()
	state := filepath.Join(l.StateDir(), backend+".backend-host.json")
	out, err := l.Command(context.Background(), backend, "backend-host", "status", "--state-file", state, "-o", "json").Output()
	var checks []statusCheck
	if jerr := json.Unmarshal(out, &checks); jerr != nil {
		t.Fatalf("backend-host status on %s: %v (%v)\n%s", backend, jerr, err, out)
	}
	return checks, err == nil
}

// TestDecapSpoofedIPIP: a host on the backends' segment that is no
// balancer sends IPIP and IP6IP6 packets to a backend, from outside the
// balancer prefixes: the inner datagrams never reach the backend's socket,
// and "xlb backend-host status" counts them; the same datagrams from a
// balancer prefix do arrive, and traffic through the balancer goes on.
func TestDecapSpoofedIPIP(t *testing.T) {
	l := newLab(t, Config{Backends: 1})
	d := loadDirect(t, l, "lb1")
	d.serve(t, loader.VIPKey{Addr: VIP4, Port: EchoPort, Proto: 6}, 1, loader.ModeIPIP, nil)
	d.serve(t, loader.VIPKey{Addr: VIP6, Port: EchoPort, Proto: 6}, 2, loader.ModeIPIP, nil)
	be := l.Backends[0]
	c := Client{Netns: l.Client.Netns}
	const spoofed = 50

	for _, tc := range []struct {
		vip, backend, spoofer, balancer netip.Addr
		etype                           uint16
	}{
		{VIP4, be.IPv4, l.Client.IPv4, netip.MustParseAddr("192.0.2.9"), 0x0800},
		{VIP6, be.IPv6, l.Client.IPv6, netip.MustParseAddr("2001:db8:e::9"), 0x86dd},
	} {
		t.Run(tc.vip.String(), func(t *testing.T) {
			var conn net.PacketConn
			err := be.Netns.Do(func() error {
				var err error
				conn, err = net.ListenPacket("udp", netip.AddrPortFrom(tc.vip, spoofPort).String())
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			countBefore := decapCounter(t, l, be.Name, "untrusted_source")

			var frames [][]byte
			for i := range spoofed {
				frames = append(frames, tunnelPacket(tc.spoofer, tc.backend, tc.vip, fmt.Sprintf("spoofed %d", i)))
			}
			// Sent after the spoofed ones on the same path: once it has
			// arrived, a spoofed datagram that got through would have too.
			frames = append(frames, tunnelPacket(tc.balancer, tc.backend, tc.vip, "from a balancer"))
			if err := sendFrames(l, be.MAC, tc.etype, frames...); err != nil {
				t.Fatal(err)
			}
			var got []string
			buf := make([]byte, 2048)
			for {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, _, err := conn.ReadFrom(buf)
				if err != nil {
					t.Fatalf("the datagram from a balancer prefix never arrived (got %q): %v", got, err)
				}
				got = append(got, string(buf[:n]))
				if string(buf[:n]) == "from a balancer" {
					break
				}
			}
			if len(got) != 1 {
				t.Errorf("the backend's socket received %d spoofed datagrams: %q", len(got)-1, got[:len(got)-1])
			}
			if n := decapCounter(t, l, be.Name, "untrusted_source") - countBefore; n != spoofed {
				t.Errorf("untrusted_source grew by %d, want %d", n, spoofed)
			}
			if name, err := c.Hello(netip.AddrPortFrom(tc.vip, EchoPort)); err != nil || name != be.Name {
				t.Errorf("through the balancer after the spoofing: %q, %v", name, err)
			}
		})
	}
}

// decapCounter reads one of xdp_decap's counters from "xlb backend-host
// status" on a lab backend.
func decapCounter(t *testing.T, l *Lab, backend, name string) int {
	t.Helper()
	checks, ok := backendHostStatus(t, l, backend)
	if !ok {
		t.Fatalf("backend-host status on %s reports something missing: %+v", backend, checks)
	}
	for _, c := range checks {
		if n, ok := c.Counters[name]; ok && strings.HasPrefix(c.Item, "decap on ") {
			return int(n)
		}
	}
	t.Fatalf("no counter %s in backend-host status: %+v", name, checks)
	return 0
}

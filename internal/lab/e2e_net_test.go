package lab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

// TestE2ETwoBalancers: two balancers with the same config pick the same
// backend for the same flow (what lets them share traffic behind ECMP with
// no shared state), and a flow moved from one to the other mid-connection
// keeps working.
func TestE2ETwoBalancers(t *testing.T) {
	l := e2eLab(t, Config{Balancers: 2, Backends: 3}, DaemonConfig{})
	c := Client{Netns: l.Client.Netns}
	const flows = 60
	seen := map[string]int{}
	for i := range flows {
		port := uint16(20000 + i) // outside the ephemeral range
		var got [2]string
		for j, lb := range []string{"lb1", "lb2"} {
			if err := l.RouteVia(lb); err != nil {
				t.Fatal(err)
			}
			conn, err := c.OpenFrom(echoVIP, port)
			if err != nil {
				t.Fatalf("flow from port %d via %s: %v", port, lb, err)
			}
			got[j] = conn.Backend
			conn.Close()
		}
		if got[0] != got[1] {
			t.Errorf("flow from port %d: lb1 chose %s, lb2 chose %s", port, got[0], got[1])
		}
		seen[got[0]]++
	}
	if len(seen) != len(l.Backends) {
		t.Errorf("%d flows reached %v, want every backend", flows, seen)
	}

	// Move an open connection between the balancers, as ECMP does when the
	// set of balancers changes.
	if err := l.RouteVia("lb1"); err != nil {
		t.Fatal(err)
	}
	conn, err := c.Open(echoVIP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, lb := range []string{"lb1", "lb2", "lb1"} {
		if err := l.RouteVia(lb); err != nil {
			t.Fatal(err)
		}
		for j := range 5 {
			if err := conn.Echo(fmt.Sprintf("via %s %d", lb, j)); err != nil {
				t.Fatalf("step %d, connection moved to %s: %v", i, lb, err)
			}
		}
	}
}

// icmpCounter reads one ICMP counter of a host: file is /proc/net/snmp
// (IPv4, "Icmp:" rows of names and values) or /proc/net/snmp6 (one "name
// value" per line).
func icmpCounter(t *testing.T, ns hostnet.Netns, file, name string) int {
	t.Helper()
	out, err := ns.Command("cat", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == name:
			n, _ := strconv.Atoi(f[1])
			return n
		case len(f) > 0 && f[0] == "Icmp:" && header == nil:
			header = f
		case len(f) > 0 && f[0] == "Icmp:":
			for i, h := range header {
				if h == name && i < len(f) {
					n, _ := strconv.Atoi(f[i])
					return n
				}
			}
		}
	}
	t.Fatalf("no %s in %s", name, file)
	return 0
}

// icmpTooBig builds the ICMP message a router on the path back to the
// client would send towards the VIP about the backend's answer (VIP:EchoPort
// → client): IPv4 "fragmentation needed" or ICMPv6 "packet too big". The
// kernel fills in the ICMPv6 checksum.
func icmpTooBig(client netip.AddrPort, vip netip.Addr, mtu uint16) []byte {
	tcp := make([]byte, 8)
	binary.BigEndian.PutUint16(tcp[0:], EchoPort)
	binary.BigEndian.PutUint16(tcp[2:], client.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	if vip.Is4() {
		msg := []byte{3, 4, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}
		msg = append(append(msg, ipv4Header(vip, client.Addr(), syscall.IPPROTO_TCP, 20+20, 0, nil)...), tcp...)
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		return msg
	}
	msg := []byte{2, 0, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}
	ip6 := make([]byte, 40)
	ip6[0] = 0x60
	binary.BigEndian.PutUint16(ip6[4:], 20)
	ip6[6] = syscall.IPPROTO_TCP
	ip6[7] = 64
	src, dst := vip.As16(), client.Addr().As16()
	copy(ip6[8:], src[:])
	copy(ip6[24:], dst[:])
	return append(append(msg, ip6...), tcp...)
}

// TestE2EICMPTooBig: an ICMP "fragmentation needed" (IPv4) or "packet too
// big" (IPv6) about an established flow reaches the backend that holds the
// flow, and no other.
func TestE2EICMPTooBig(t *testing.T) {
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{IPv6: true})
	c := Client{Netns: l.Client.Netns}
	for _, tc := range []struct {
		vip           netip.Addr
		network, file string
		counter       string
	}{
		{VIP4, "ip4:icmp", "/proc/net/snmp", "InDestUnreachs"},
		{VIP6, "ip6:ipv6-icmp", "/proc/net/snmp6", "Icmp6InPktTooBigs"},
	} {
		t.Run(tc.vip.String(), func(t *testing.T) {
			conn, err := c.Open(netip.AddrPortFrom(tc.vip, EchoPort))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			local := netip.MustParseAddrPort(conn.LocalAddr().String())
			before := map[string]int{}
			for _, be := range l.Backends {
				before[be.Name] = icmpCounter(t, be.Netns, tc.file, tc.counter)
			}
			const sent = 5
			err = l.Client.Netns.Do(func() error {
				pc, err := net.ListenPacket(tc.network, "::")
				if tc.vip.Is4() {
					pc, err = net.ListenPacket(tc.network, "0.0.0.0")
				}
				if err != nil {
					return err
				}
				defer pc.Close()
				msg := icmpTooBig(local, tc.vip, 1400)
				for range sent {
					if _, err := pc.WriteTo(msg, &net.IPAddr{IP: tc.vip.AsSlice()}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("send icmp: %v", err)
			}
			// Wait for the flow's backend to count all of them; a message
			// sent elsewhere would have arrived by then too.
			testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%s counting %d %s", conn.Backend, sent, tc.counter), func() bool {
				for _, be := range l.Backends {
					if be.Name == conn.Backend {
						return icmpCounter(t, be.Netns, tc.file, tc.counter)-before[be.Name] >= sent
					}
				}
				return false
			})
			for _, be := range l.Backends {
				got := icmpCounter(t, be.Netns, tc.file, tc.counter) - before[be.Name]
				want := 0
				if be.Name == conn.Backend {
					want = sent
				}
				if got != want {
					t.Errorf("%s counted %d %s, want %d (the flow is on %s)", be.Name, got, tc.counter, want, conn.Backend)
				}
			}
			if err := conn.Echo("after icmp"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// statsJSON is the part of "xlb stats -o json" the tests read.
type statsJSON struct {
	Drops map[string]uint64 `json:"drops"`
	VIPs  []struct {
		Address string `json:"address"`
		Packets uint64 `json:"packets"`
	} `json:"vips"`
}

// readStats runs "xlb stats -o json" on a balancer.
func readStats(t *testing.T, l *Lab, balancer string) statsJSON {
	t.Helper()
	var s statsJSON
	out := cli(t, l, balancer, "stats", "-o", "json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("parse stats: %v\n%s", err, out)
	}
	return s
}

// vipPackets is a VIP's forwarded packets as "xlb stats" reports them.
func vipPackets(t *testing.T, l *Lab, balancer, vip string) uint64 {
	t.Helper()
	for _, v := range readStats(t, l, balancer).VIPs {
		if v.Address == vip {
			return v.Packets
		}
	}
	t.Fatalf("no vip %s in xlb stats", vip)
	return 0
}

// TestE2EMalformed: malformed and non-VIP frames sent at the balancer's
// interface are counted by reason and do not disturb the balancer host:
// it keeps answering on its own address and keeps forwarding.
func TestE2EMalformed(t *testing.T) {
	l := e2eLab(t, Config{Backends: 2}, DaemonConfig{})
	lb := l.Balancers[0]
	stats := func() map[string]uint64 { return readStats(t, l, "lb1").Drops }
	client := l.Client.IPv4
	tcpToVIP := make([]byte, 20)
	binary.BigEndian.PutUint16(tcpToVIP[0:], 40000)
	binary.BigEndian.PutUint16(tcpToVIP[2:], EchoPort)
	tcpToVIP[12] = 5 << 4
	tcpToVIP[13] = 0x02 // SYN

	frames := []struct {
		name    string
		reason  string // counter that must grow; "" when the reason is not pinned down
		etype   uint16
		payload []byte
	}{
		{"not IP", "not_ip", 0x88b5, make([]byte, 46)},
		{"truncated IPv4 header", "malformed", 0x0800, []byte{0x45, 0, 0, 20, 0}},
		{"IPv4 header length 3", "malformed", 0x0800, append([]byte{0x43}, make([]byte, 45)...)},
		{"IPv4 options to the VIP", "ip_options", 0x0800,
			append(ipv4Header(client, VIP4, syscall.IPPROTO_TCP, 24+20, 0, []byte{1, 1, 1, 0}), tcpToVIP...)},
		{"IPv4 fragment to the VIP", "fragment", 0x0800,
			append(ipv4Header(client, VIP4, syscall.IPPROTO_TCP, 20+20, 0x2000, nil), tcpToVIP...)},
		{"UDP to a non-VIP address", "no_vip", 0x0800,
			append(ipv4Header(client, netip.MustParseAddr("203.0.113.99"), syscall.IPPROTO_UDP, 20+8, 0, nil), 0x9c, 0x40, 0, 53, 0, 8, 0, 0)},
	}
	const each = 200
	before := stats()
	err := l.Client.Netns.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		ifi, err := net.InterfaceByName(Ifname)
		if err != nil {
			return err
		}
		for _, f := range frames {
			frame := append(append(append([]byte{}, lb.MAC...), l.Client.MAC...), byte(f.etype>>8), byte(f.etype))
			frame = append(frame, f.payload...)
			sa := &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
			copy(sa.Addr[:], lb.MAC)
			for range each {
				if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
					return fmt.Errorf("send %s: %w", f.name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	grown := func() (map[string]uint64, uint64) {
		diff := map[string]uint64{}
		var total uint64
		for k, v := range stats() {
			if d := v - before[k]; d > 0 {
				diff[k] = d
				total += d
			}
		}
		return diff, total
	}
	// Wait until every frame is counted (raw frames take a moment to pass
	// the veth); the checks below then say which reason fell short.
	testutil.Eventually(t, 5*time.Second, "every frame counted", func() bool {
		diff, total := grown()
		for _, f := range frames {
			if f.reason != "" && diff[f.reason] < each {
				return false
			}
		}
		return total >= uint64(each*len(frames))
	})
	diff, total := grown()
	t.Logf("counters grown by %d frames of each of %d kinds: %v", each, len(frames), diff)
	for _, f := range frames {
		if f.reason != "" && diff[f.reason] < each {
			t.Errorf("%s: counter %s grew by %d, want at least %d", f.name, f.reason, diff[f.reason], each)
		}
	}
	if total < uint64(each*len(frames)) {
		t.Errorf("counters grew by %d in all, want at least %d (every frame counted)", total, each*len(frames))
	}

	// The balancer host is undisturbed: it answers on its own address and
	// the VIP still works.
	if out, err := l.Client.Netns.Command("ping", "-c", "2", "-i", "0.2", "-W", "2", lb.IPv4.String()).CombinedOutput(); err != nil {
		t.Errorf("balancer no longer answers ping: %v\n%s", err, out)
	}
	if _, err := (Client{Netns: l.Client.Netns}).HTTPGet(context.Background(), netip.AddrPortFrom(VIP4, HTTPPort)); err != nil {
		t.Errorf("VIP after malformed traffic: %v", err)
	}
}

// ipv4Header builds an IPv4 header with the given options (a multiple of
// 4 bytes) and a correct checksum. total is the packet's total length;
// frag holds the flags and fragment offset.
func ipv4Header(src, dst netip.Addr, proto uint8, total int, frag uint16, opts []byte) []byte {
	h := make([]byte, 20+len(opts))
	h[0] = 0x40 | byte(len(h)/4)
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint16(h[4:], 1)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	copy(h[20:], opts)
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	return h
}

// checksum is the Internet checksum.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

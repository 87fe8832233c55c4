package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/loader"
)

const (
	pmtuPort = 9400
	// pathMTU is the MTU of the backends' links; the client's link is
	// 1500 too, so its full-size packets no longer fit once encapsulated.
	pathMTU = 1500
)

// startCopyServer accepts TCP connections on port in ns and sends back
// everything it reads (io.Copy), until the test ends.
func startCopyServer(t *testing.T, be Host, port int) {
	t.Helper()
	var ln net.Listener
	err := be.Netns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// transfer sends size bytes to addr from the client and reads them back:
// the upload goes through the balancer, the download straight from the
// backend (DSR).
func transfer(l *Lab, addr netip.AddrPort, size int) error {
	conn, err := (Client{Netns: l.Client.Netns, Timeout: 10 * time.Second}).Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(90 * time.Second))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*31 + i>>8)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	got, err := io.ReadAll(conn)
	if serr := <-sent; serr != nil {
		return fmt.Errorf("upload after %d bytes echoed: %w", len(got), serr)
	}
	if err != nil {
		return fmt.Errorf("download after %d bytes: %w", len(got), err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("the data came back changed")
	}
	return nil
}

// TestPMTUThroughVIP: with the backends' links at MTU 1500, a client
// with MTU 1500 sends full-size segments that no longer fit once the
// balancer adds the outer header. The balancer answers them with ICMP
// "fragmentation needed" / "packet too big" naming 1480 / 1460; the
// client's path MTU discovery converges on it, and a 4 MB upload and
// download through the VIP completes, in both families. (With the answers
// off the same transfer stalls: the packets are dropped as too_big.)
func TestPMTUThroughVIP(t *testing.T) {
	l := newLab(t, Config{Backends: 1})
	be := l.Backends[0]
	setLinkMTU(t, be, pathMTU)
	d := loadDirect(t, l, "lb1")
	lb := l.Balancers[0]
	if err := d.dp.SetConfig(loader.Config{SourceMAC: lb.MAC, OuterSource4: OuterSource4, OuterSource6: OuterSource6, MTU: pathMTU}); err != nil {
		t.Fatal(err)
	}
	d.serve(t, loader.VIPKey{Addr: VIP4, Port: pmtuPort, Proto: 6}, 1, loader.ModeIPIP, nil)
	d.serve(t, loader.VIPKey{Addr: VIP6, Port: pmtuPort, Proto: 6}, 2, loader.ModeIPIP, nil)
	startCopyServer(t, be, pmtuPort)

	for _, tc := range []struct {
		vip     netip.Addr
		wantMTU int
	}{
		{VIP4, pathMTU - 20},
		{VIP6, pathMTU - 40},
	} {
		t.Run(tc.vip.String(), func(t *testing.T) {
			before, err := d.dp.Drops()
			if err != nil {
				t.Fatal(err)
			}
			if err := transfer(l, netip.AddrPortFrom(tc.vip, pmtuPort), 4<<20); err != nil {
				t.Fatalf("4 MB through %s: %v", tc.vip, err)
			}
			after, err := d.dp.Drops()
			if err != nil {
				t.Fatal(err)
			}
			if n := after["icmp_too_big"] - before["icmp_too_big"]; n == 0 {
				t.Errorf("no ICMP too big sent (counters %v): the transfer did not need one", after)
			}
			if n := after["too_big"] - before["too_big"]; n != 0 {
				t.Errorf("%d packets dropped as too_big", n)
			}
			if got := clientPathMTU(t, l, tc.vip); got != tc.wantMTU {
				t.Errorf("client's path MTU to %s is %d, want %d", tc.vip, got, tc.wantMTU)
			}
		})
	}
}

// setLinkMTU sets the MTU of a lab host's interface.
func setLinkMTU(t *testing.T, host Host, mtu int) {
	t.Helper()
	h, err := host.Netns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName(Ifname)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(eth, mtu); err != nil {
		t.Fatal(err)
	}
}

// TestE2EPMTU: the same through the daemon and the lab's TCP echo server,
// with the backends' links and encap.mtu at 1400 (below the default, so
// that a daemon ignoring encap.mtu would let 1480-byte packets through to
// be lost on the backend's link): 3,000 lines of 1,400 bytes written at once
// (full-size segments) come back whole, in both families, and the balancer
// counts the ICMP answers it sent.
func TestE2EPMTU(t *testing.T) {
	const mtu = 1400
	l := e2eLab(t, Config{Backends: 1}, DaemonConfig{IPv6: true, MTU: mtu})
	setLinkMTU(t, l.Backends[0], mtu)
	line := strings.Repeat("x", 1400)
	const lines = 3000
	for _, vip := range []netip.Addr{VIP4, VIP6} {
		t.Run(vip.String(), func(t *testing.T) {
			before := readStats(t, l, "lb1").Drops["icmp_too_big"]
			conn, err := (Client{Netns: l.Client.Netns, Timeout: 60 * time.Second}).Open(netip.AddrPortFrom(vip, EchoPort))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(90 * time.Second))
			sent := make(chan error, 1)
			go func() {
				w := bufio.NewWriterSize(conn.Conn, 64<<10)
				for i := range lines {
					fmt.Fprintf(w, "%04d %s\n", i, line)
				}
				sent <- w.Flush()
			}()
			for i := range lines {
				got, err := conn.r.ReadString('\n')
				if err != nil {
					t.Fatalf("line %d of %d: %v", i, lines, err)
				}
				if want := fmt.Sprintf("%s %04d %s\n", conn.Backend, i, line); got != want {
					t.Fatalf("line %d came back as %.40q...", i, got)
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if after := readStats(t, l, "lb1").Drops["icmp_too_big"]; after == before {
				t.Errorf("icmp_too_big stayed at %d: no answer was needed", after)
			}
			want := mtu - 20
			if vip.Is6() {
				want = mtu - 40
			}
			if got := clientPathMTU(t, l, vip); got != want {
				t.Errorf("client's path MTU to %s is %d, want %d", vip, got, want)
			}
		})
	}
}

// clientPathMTU reads the path MTU the client's kernel learned for dst
// (its route exception), 0 when it has none.
func clientPathMTU(t *testing.T, l *Lab, dst netip.Addr) int {
	t.Helper()
	var mtu int
	err := l.Client.Netns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		routes, err := h.RouteGet(dst.AsSlice())
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.MTU > 0 {
				mtu = r.MTU
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("route to %s: %v", dst, err)
	}
	if mtu == 0 {
		out, _ := l.Client.Netns.Command("ip", "route", "get", dst.String()).CombinedOutput()
		t.Logf("ip route get %s: %s", dst, strings.TrimSpace(string(out)))
	}
	return mtu
}

package healthd_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

// trafficLab adds to lab a client namespace and a switch namespace with a
// bridge joining client, balancer and backend: the balancer's XDP_TX
// frames reach the backend through the bridge, and the backend answers the
// client directly (DSR). The backend strips the IPIP header with xdp_decap
// and serves 203.0.113.10:80 on lo.
type trafficLab struct {
	*lab
	cl, sw hostnet.Netns
}

func newTrafficLab(t *testing.T) *trafficLab {
	t.Helper()
	l := &lab{t: t, bin: xlbBinary(t), lb: testutil.Netns(t), be: testutil.Netns(t)}
	tl := &trafficLab{lab: l, cl: testutil.Netns(t), sw: testutil.Netns(t)}
	h, err := tl.sw.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: 1600}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		ns   hostnet.Netns
		name string
		addr string
		mtu  int
		port string
	}{
		{tl.cl, "cl0", "198.51.100.100/24", 1500, "p-cl"},
		{l.lb, "lb0", "198.51.100.1/24", 1600, "p-lb"},
		{l.be, "be0", "198.51.100.11/24", 1600, "p-be"},
	} {
		testutil.Veth(t,
			hostnet.VethEnd{Netns: end.ns, Name: end.name, Addrs: []netip.Prefix{netip.MustParsePrefix(end.addr)}, MTU: end.mtu, NoTxCs: true},
			hostnet.VethEnd{Netns: tl.sw, Name: end.port, MTU: 1600})
		p, err := h.LinkByName(end.port)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetMaster(p, br); err != nil {
			t.Fatal(err)
		}
		// XDP_TX into a veth needs GRO (or XDP) on the receiving peer.
		if out, err := tl.sw.Command("ethtool", "-K", end.port, "gro", "on").CombinedOutput(); err != nil {
			t.Fatalf("ethtool: %v %s", err, out)
		}
	}
	// Client: the VIPs are behind the balancer.
	run := func(ns hostnet.Netns, args ...string) {
		t.Helper()
		if out, err := ns.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	run(tl.cl, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
	// Backend: VIP on lo, decap on be0, a line echo server on the VIP.
	run(l.be, "ip", "addr", "add", "203.0.113.10/32", "dev", "lo")
	run(l.be, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.be0.rp_filter=0", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
	if err := l.be.Do(func() error { return loader.AttachDecap("be0", false) }); err != nil {
		t.Fatal(err)
	}
	if err := l.be.Do(func() error {
		ln, err := net.Listen("tcp", "0.0.0.0:80")
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "xlbt-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l.dir = dir
	l.pinDir = fmt.Sprintf("/sys/fs/bpf/xlbt-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() {
		if err := loader.Cleanup(l.pinDir); err != nil {
			t.Errorf("cleanup pins: %v", err)
		}
	})
	l.socket = filepath.Join(dir, "xlb.sock")
	l.metrics = "127.0.0.1:9437"
	return tl
}

// progID is the XDP program attached to lb0.
func (tl *trafficLab) progID(t *testing.T) uint32 {
	t.Helper()
	h, err := tl.lb.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("lb0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Xdp == nil {
		return 0
	}
	return link.Attrs().Xdp.ProgId
}

func TestConnectionSurvivesRestartAndUpgrade(t *testing.T) {
	tl := newTrafficLab(t)
	tl.writeConfig(`vips:
  - address: 203.0.113.10:80/tcp
    table_size: 251
    check: { kind: tcp, port: 80, interval: 100ms, timeout: 50ms, rise: 1, fall: 2 }
    backends:
      - { address: 198.51.100.11 }
`)
	tl.start()
	tl.eventually("backend healthy and resolved", func() bool {
		v := findVIP(tl.status(), "203.0.113.10:80/tcp")
		return v != nil && len(v.Backends) == 1 && v.Backends[0].Health == "healthy" && v.Backends[0].UsableNew
	})

	var conn net.Conn
	if err := tl.cl.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", "203.0.113.10:80", 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect through the balancer: %v\n%s", err, tl.log)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo := func(step string) {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "%s\n", step); err != nil {
			t.Fatalf("%s: write: %v", step, err)
		}
		line, err := r.ReadString('\n')
		if err != nil || line != step+"\n" {
			t.Fatalf("%s: echo %q, %v", step, line, err)
		}
	}
	echo("before")
	if st := tl.status(); st.VIPs[0].Backends[0].Packets == 0 {
		t.Fatal("the backend counter did not move: traffic did not go through xdp_lb")
	}
	prog := tl.progID(t)

	tl.stop()
	echo("daemon stopped") // the pinned datapath forwards on its own
	tl.start()
	echo("after restart")
	if got := tl.progID(t); got != prog {
		t.Logf("restart replaced the program (%d -> %d)", prog, got)
	}

	// Upgrade: another binary adopts the pins and replaces the program
	// through the pinned link.
	newer := filepath.Join(tl.dir, "xlb-newer")
	b, err := os.ReadFile(tl.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newer, b, 0o755); err != nil {
		t.Fatal(err)
	}
	before := tl.progID(t)
	tl.stop()
	tl.bin = newer
	tl.start()
	echo("after upgrade")
	if after := tl.progID(t); after == before || after == 0 {
		t.Fatalf("program on lb0 %d, was %d: not replaced", after, before)
	}
	out, err := exec.Command("ip", "-n", tl.lb.Name, "link", "show", "lb0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "xdp") {
		t.Fatalf("lb0 lost its XDP program: %v %s", err, out)
	}
}

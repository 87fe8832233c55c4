package healthd_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/loader"
)

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
	pinSeq    atomic.Uint32
)

// xlbBinary builds cmd/xlb once per test binary, into a directory every
// user may read (the permission tests run it as nobody).
func xlbBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xlbt-bin-")
		if err != nil {
			binErr = err
			return
		}
		_ = os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "xlb")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/xlb").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("build xlb: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// lab is a balancer namespace with lb0 and a backend namespace with be0,
// joined by a veth pair, plus the files of one daemon.
type lab struct {
	t       *testing.T
	bin     string
	lb, be  hostnet.Netns
	dir     string // config, state, socket; world-traversable
	pinDir  string
	config  string
	socket  string
	metrics string
	daemon  *exec.Cmd
	log     *syncBuffer
	exited  chan struct{}
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, bin: xlbBinary(t), lb: testutil.Netns(t), be: testutil.Netns(t)}
	testutil.Veth(t,
		hostnet.VethEnd{Netns: l.lb, Name: "lb0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")}},
		hostnet.VethEnd{Netns: l.be, Name: "be0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24"), netip.MustParsePrefix("198.51.100.12/24"), netip.MustParsePrefix("2001:db8:1::11/64")}})
	dir, err := os.MkdirTemp("", "xlbt-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.dir = dir
	l.pinDir = fmt.Sprintf("/sys/fs/bpf/xlbt-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() {
		if err := loader.Cleanup(l.pinDir); err != nil {
			t.Errorf("cleanup pins: %v", err)
		}
	})
	l.socket = filepath.Join(l.dir, "xlb.sock")
	l.metrics = "127.0.0.1:9437"
	// A TCP health-check target on .11 only, inside the backend namespace.
	if err := l.be.Do(func() error {
		ln, err := net.Listen("tcp", "198.51.100.11:80")
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
				c.Close()
			}
		}()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *lab) writeConfig(vips string) {
	l.t.Helper()
	l.config = filepath.Join(l.dir, "xlb.yaml")
	c := fmt.Sprintf(`interface: lb0
bpffs: %s
state_dir: %s
socket: %s
socket_group: nogroup
metrics_addr: %s
encap: { source_v4: 192.0.2.0/24 }
%s`, l.pinDir, filepath.Join(l.dir, "state"), l.socket, l.metrics, vips)
	if err := os.WriteFile(l.config, []byte(c), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// start runs the daemon with only the network namespace switched, so its
// pins are in the host's bpffs, and waits until its API answers.
func (l *lab) start() {
	l.t.Helper()
	l.log = &syncBuffer{}
	l.daemon = l.lb.Command(l.bin, "daemon", "--config", l.config)
	l.daemon.Stdout, l.daemon.Stderr = l.log, l.log
	if err := l.daemon.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.exited = make(chan struct{})
	cmd, exited := l.daemon, l.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	l.t.Cleanup(func() { l.stop() })
	log := l.log
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("daemon log:\n%s", log)
		}
	})
	c := api.NewClient(l.socket)
	testutil.Eventually(l.t, 20*time.Second, "the daemon's API", func() bool {
		select {
		case <-exited:
			l.t.Fatalf("daemon exited:\n%s", log)
		default:
		}
		_, err := c.Status()
		return err == nil
	})
}

func (l *lab) stop() {
	if l.daemon == nil {
		return
	}
	_ = l.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.exited:
	case <-time.After(10 * time.Second):
		_ = l.daemon.Process.Kill()
		<-l.exited
	}
	l.daemon = nil
}

// xlb runs the CLI against the lab's daemon.
func (l *lab) xlb(args ...string) (string, error) {
	cmd := exec.Command(l.bin, append(args, "--socket", l.socket)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *lab) mustXLB(args ...string) string {
	l.t.Helper()
	out, err := l.xlb(args...)
	if err != nil {
		l.t.Fatalf("xlb %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, l.log)
	}
	return out
}

// eventually waits for state that settles asynchronously, such as health
// checks and neighbour resolution (the daemon log is printed on failure).
func (l *lab) eventually(what string, cond func() bool) {
	l.t.Helper()
	testutil.Eventually(l.t, 15*time.Second, what, cond)
}

func (l *lab) status() api.Status {
	l.t.Helper()
	st, err := api.NewClient(l.socket).Status()
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// maps opens the pinned maps the way a second process would.
func (l *lab) maps() (map[loader.VIPKey]loader.VIP, func(id uint32) []uint32) {
	l.t.Helper()
	dp, err := loader.Load(loader.Options{PinDir: l.pinDir})
	if err != nil {
		l.t.Fatal(err)
	}
	defer dp.Close()
	vips, err := dp.VIPs()
	if err != nil {
		l.t.Fatal(err)
	}
	tables := map[uint32][]uint32{}
	for _, v := range vips {
		tb, err := dp.Table(v.ID)
		if err != nil {
			l.t.Fatal(err)
		}
		tables[v.ID] = tb
	}
	return vips, func(id uint32) []uint32 { return tables[id] }
}

func slotsOf(table []uint32) map[uint32]int {
	out := map[uint32]int{}
	for _, id := range table {
		out[id]++
	}
	return out
}

func findVIP(st api.Status, addr string) *api.VIPStatus {
	for i := range st.VIPs {
		if st.VIPs[i].Address == addr {
			return &st.VIPs[i]
		}
	}
	return nil
}

func TestDaemonInNetns(t *testing.T) {
	l := newLab(t)
	l.writeConfig(`vips:
  - address: 203.0.113.10:80/tcp
    table_size: 251
    check: { kind: tcp, port: 80, interval: 100ms, timeout: 50ms, rise: 1, fall: 1 }
    backends:
      - { address: 198.51.100.11 }
`)
	l.start()
	const vip = "203.0.113.10:80/tcp"

	// Through the CLI: a second backend (its check fails: nothing listens
	// on .12:80) and a second VIP.
	l.mustXLB("backend", "add", vip, "198.51.100.12", "--weight", "2")
	l.mustXLB("vip", "add", "203.0.113.11:*/udp", "--table-size", "4093", "--mode", "ipip")
	l.mustXLB("backend", "add", "203.0.113.11:*/udp", "198.51.100.12")

	l.eventually("health of .11 healthy and .12 unhealthy", func() bool {
		v := findVIP(l.status(), vip)
		return v != nil && len(v.Backends) == 2 && v.Backends[0].Health == "healthy" && v.Backends[1].Health == "unhealthy" &&
			v.Backends[0].NextHop != "" && v.Backends[0].NextHopErr == ""
	})
	st := l.status()
	v := findVIP(st, vip)
	if v.Panic {
		t.Fatalf("1 of 2 healthy is not below 50%%: %+v", v)
	}
	b11, b12 := v.Backends[0], v.Backends[1]

	// The maps, read through the loader, match the status.
	vips, table := l.maps()
	lv, ok := vips[loader.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: 6}]
	if !ok || lv.ID != v.ID || lv.TableSize != 251 {
		t.Fatalf("VIP in the map: %+v (found %v), status ID %d", lv, ok, v.ID)
	}
	if s := slotsOf(table(lv.ID)); s[b11.ID] != 251 || s[b12.ID] != 0 {
		t.Fatalf("table slots %v: want all 251 on healthy .11 (id %d)", s, b11.ID)
	}
	if _, ok := vips[loader.VIPKey{Addr: netip.MustParseAddr("203.0.113.11"), Port: 0, Proto: 17}]; !ok {
		t.Fatal("wildcard UDP VIP not in the map")
	}

	// IPv6: the next hop is found by neighbour discovery.
	l.mustXLB("vip", "add", "[2001:db8:f::10]:443/tcp", "--table-size", "251")
	l.mustXLB("backend", "add", "[2001:db8:f::10]:443/tcp", "2001:db8:1::11")
	l.eventually("IPv6 backend resolved and in the table", func() bool {
		v := findVIP(l.status(), "[2001:db8:f::10]:443/tcp")
		return v != nil && len(v.Backends) == 1 && v.Backends[0].NextHop != "" && v.Backends[0].NextHopErr == "" && v.Backends[0].Slots == 251
	})
	vips, table = l.maps()
	v6, ok := vips[loader.VIPKey{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 443, Proto: 6}]
	if !ok || len(slotsOf(table(v6.ID))) != 1 {
		t.Fatalf("IPv6 VIP in the map: %+v %v", v6, ok)
	}
	l.mustXLB("vip", "remove", "[2001:db8:f::10]:443/tcp")

	// Drain .11: no new flows, out of the table (the VIP panics: no active
	// backend healthy, so .12 serves).
	l.mustXLB("backend", "drain", vip, "198.51.100.11", "--timeout", "1h")
	st = l.status()
	v = findVIP(st, vip)
	if !v.Panic || v.Backends[0].Admin != "draining" || v.Backends[0].UsableNew || !v.Backends[0].UsableEst {
		t.Fatalf("after drain: %+v", v)
	}
	_, table = l.maps()
	if s := slotsOf(table(v.ID)); s[b11.ID] != 0 || s[b12.ID] != 251 {
		t.Fatalf("after drain, table slots %v", s)
	}
	l.mustXLB("backend", "undrain", vip, "198.51.100.11")

	// Persistence across a restart: same IDs, same tables.
	before := l.status()
	_, tableBefore := l.maps()
	l.stop()
	l.start()
	l.eventually("health settled after restart", func() bool {
		v := findVIP(l.status(), vip)
		return v != nil && len(v.Backends) == 2 && v.Backends[0].Health == "healthy"
	})
	after := l.status()
	if len(after.VIPs) != len(before.VIPs) {
		t.Fatalf("restart lost VIPs: %d, was %d", len(after.VIPs), len(before.VIPs))
	}
	for _, bv := range before.VIPs {
		av := findVIP(after, bv.Address)
		if av == nil || av.ID != bv.ID || len(av.Backends) != len(bv.Backends) {
			t.Fatalf("VIP %s after restart: %+v", bv.Address, av)
		}
		for i := range bv.Backends {
			if av.Backends[i].ID != bv.Backends[i].ID || av.Backends[i].Weight != bv.Backends[i].Weight {
				t.Fatalf("backend after restart %+v, was %+v", av.Backends[i], bv.Backends[i])
			}
		}
		_, tableAfter := l.maps()
		if !slicesEqual(tableAfter(bv.ID), tableBefore(bv.ID)) {
			t.Fatalf("table of %s changed across the restart", bv.Address)
		}
	}

	// A bad configuration on SIGHUP is refused; the running state stays.
	good, _ := os.ReadFile(l.config)
	if err := os.WriteFile(l.config, append(good, []byte("bogus: 1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = l.daemon.Process.Signal(syscall.SIGHUP)
	l.eventually("reload refused", func() bool { return strings.Contains(l.log.String(), "reload refused") })
	if st := l.status(); len(st.VIPs) != 2 {
		t.Fatalf("refused reload changed the state: %+v", st.VIPs)
	}
	// A good one applies; the overlay's backend .12 stays.
	if err := os.WriteFile(l.config, bytes.Replace(good, []byte("table_size: 251"), []byte("table_size: 4093"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = l.daemon.Process.Signal(syscall.SIGHUP)
	l.eventually("reload applied", func() bool {
		v := findVIP(l.status(), vip)
		return v != nil && v.TableSize == 4093 && len(v.Backends) == 2
	})
	// --check-config refuses a bad file and touches nothing.
	if out, err := exec.Command(l.bin, "daemon", "--check-config", "--config", "../testdata/config/bad-table-size.yaml").CombinedOutput(); err == nil || !strings.Contains(string(out), "is not a prime") {
		t.Fatalf("check-config of a bad file: %v %s", err, out)
	}

	// Remove: the backend leaves table and map.
	l.mustXLB("backend", "remove", vip, "198.51.100.12")
	l.mustXLB("vip", "remove", "203.0.113.11:*/udp")
	vips, _ = l.maps()
	if len(vips) != 1 {
		t.Fatalf("%d VIPs in the map after removal, want 1", len(vips))
	}

	t.Run("socket permissions", func(t *testing.T) {
		info, err := os.Stat(l.socket)
		if err != nil {
			t.Fatal(err)
		}
		sys := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm() != 0o660 || sys.Uid != 0 || sys.Gid != 65534 {
			t.Fatalf("socket mode %v owner %d:%d, want 0660 0:65534", info.Mode().Perm(), sys.Uid, sys.Gid)
		}
		as := func(uid, gid uint32, args ...string) (string, error) {
			cmd := exec.Command(l.bin, append(args, "--socket", l.socket)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		// A group member reads but cannot change.
		if out, err := as(65534, 65534, "status", "-o", "json"); err != nil {
			t.Fatalf("group member cannot read: %v %s", err, out)
		}
		out, err := as(65534, 65534, "vip", "add", "203.0.113.12:80/tcp")
		if err == nil || !strings.Contains(out, "permission denied") {
			t.Fatalf("group member changed something: %v %s", err, out)
		}
		// Neither root nor in the group: refused.
		out, err = as(65534, 65533, "status")
		if err == nil || !strings.Contains(out, "permission denied") {
			t.Fatalf("stranger read the status: %v %s", err, out)
		}
		if st := l.status(); findVIP(st, "203.0.113.12:80/tcp") != nil {
			t.Fatal("refused change applied")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		var body []byte
		err := l.lb.Do(func() error {
			c, err := net.Dial("tcp", l.metrics)
			if err != nil {
				return err
			}
			defer c.Close()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+l.metrics+"/metrics", nil)
			if err := req.Write(c); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, err = buf.ReadFrom(resp.Body)
			body = buf.Bytes()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("parse metrics: %v", err)
		}
		for _, name := range []string{"xlb_vip_packets_total", "xlb_backend_health", "xlb_vip_panic", "xlb_datapath_drops_total", "xlb_table_rebuild_duration_seconds", "xlb_health_check_duration_seconds"} {
			if fams[name] == nil {
				t.Errorf("metric %s missing", name)
			}
		}
	})

	// Stopped, the daemon leaves the datapath attached; --cleanup removes
	// the pins, which detaches it.
	l.stop()
	if out, err := exec.Command("ip", "-n", l.lb.Name, "link", "show", "lb0").CombinedOutput(); err != nil || !strings.Contains(string(out), "xdp") {
		t.Fatalf("stopped daemon took the program with it: %v %s", err, out)
	}
	if out, err := exec.Command(l.bin, "daemon", "--cleanup", "--bpffs", l.pinDir).CombinedOutput(); err != nil {
		t.Fatalf("xlb daemon --cleanup: %v %s", err, out)
	}
	if _, err := os.Stat(l.pinDir); !os.IsNotExist(err) {
		t.Fatalf("pin dir still there after --cleanup: %v", err)
	}
	// The kernel releases an unpinned link once its last reference is
	// dropped, which can trail the unpin under load.
	testutil.Eventually(t, 10*time.Second, "program detached after --cleanup", func() bool {
		out, _ := exec.Command("ip", "-n", l.lb.Name, "link", "show", "lb0").CombinedOutput()
		return !strings.Contains(string(out), "xdp")
	})
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// syncBuffer is a bytes.Buffer the daemon's output is copied into while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

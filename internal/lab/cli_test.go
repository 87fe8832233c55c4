package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

// TestLabCLI runs the lab commands as the demo does: up with the daemon,
// show, traffic with a long-lived connection, a server stopped and started,
// and down leaving nothing behind.
func TestLabCLI(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := buildXLB(t)
	prefix := testPrefix()
	dir := filepath.Join("/run", strings.TrimSuffix(prefix, "-"))
	t.Cleanup(func() { _ = Down(prefix, dir) })
	xlb := func(args ...string) string {
		t.Helper()
		out, err := hostnet.Netns{}.Command(bin, append(args, "--prefix", prefix, "--state-dir", dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("xlb %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	xlb("lab", "up", "--backends", "2", "--check-interval", "200ms")
	var hosts []struct {
		Name, Role, Netns string
	}
	if err := json.Unmarshal([]byte(xlb("lab", "show", "-o", "json")), &hosts); err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 4 || hosts[0].Netns != prefix+"client" {
		t.Fatalf("lab show: %+v", hosts)
	}
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "both backends healthy", func() bool {
		n := 0
		for _, b := range listBackends(t, l, "lb1", vipTCP) {
			if b.Health == "healthy" && b.UsableNew {
				n++
			}
		}
		return n == 2
	})
	out := xlb("lab", "traffic", "--duration", "1500ms", "--rate", "50", "--hold")
	for _, want := range []string{"be1", "be2", "held(", "failed 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab traffic output lacks %q:\n%s", want, out)
		}
	}
	xlb("lab", "server", "stop", "be2")
	// Asked from inside be2, the VIP is its own (on lo): this reaches its
	// server directly.
	if _, err := (Client{Netns: l.Backends[1].Netns}).Hello(echoVIP); err == nil {
		t.Error("be2's server still answers after 'lab server stop'")
	}
	xlb("lab", "server", "start", "be2")
	testutil.Eventually(t, 5*time.Second, "be2's server back", func() bool {
		name, err := (Client{Netns: l.Backends[1].Netns}).Hello(echoVIP)
		return err == nil && name == "be2"
	})

	xlb("lab", "down")
	entries, _ := os.ReadDir(hostnet.NetnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left after lab down", e.Name())
		}
	}
	if pins, _ := filepath.Glob(filepath.Join(BPFFS, prefix+"*")); len(pins) > 0 {
		t.Errorf("pins left after lab down: %v", pins)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir left after lab down: %v", err)
	}
}

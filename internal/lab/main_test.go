package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

// The xlb binary built for the end-to-end tests: the lab runs its echo
// servers, backend-host setup and daemons from it, as a user would. Built
// once, when the first test needs it.
var (
	binDir    string
	binOnce   sync.Once
	xlbBinary string
	xlbErr    error
	labSeq    atomic.Uint32
	sweepOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func buildXLB(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		binDir, xlbErr = os.MkdirTemp("", "xlb-lab-test-")
		if xlbErr != nil {
			return
		}
		xlbBinary = filepath.Join(binDir, "xlb")
		out, err := exec.Command("go", "build", "-o", xlbBinary, "github.com/xlb-project/xlb/cmd/xlb").CombinedOutput()
		if err != nil {
			xlbErr = fmt.Errorf("build xlb for the lab tests: %v\n%s", err, out)
		}
	})
	if xlbErr != nil {
		tb.Fatal(xlbErr)
	}
	return xlbBinary
}

// testPrefix names a test lab's namespaces so that testutil's sweep
// recognises them (xlbt-PID-...) and they never meet "xlb lab up" (xlb-).
func testPrefix() string {
	return fmt.Sprintf("xlbt-%d-L%d-", os.Getpid(), labSeq.Add(1))
}

// sweepStaleLabs removes labs of test processes that died without cleaning
// up (killed by a timeout): their servers and daemons still run inside the
// namespaces and would hold them forever.
func sweepStaleLabs() {
	entries, _ := os.ReadDir(hostnet.NetnsDir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "xlbt-")
		if !ok {
			continue
		}
		pid, lab, _ := strings.Cut(rest, "-")
		if !strings.HasPrefix(lab, "L") {
			continue
		}
		if n, err := strconv.Atoi(pid); err != nil || n == os.Getpid() {
			continue
		} else if _, err := os.Stat("/proc/" + pid); err == nil {
			continue
		}
		labID, _, _ := strings.Cut(lab, "-")
		prefix := "xlbt-" + pid + "-" + labID + "-"
		_ = Down(prefix, filepath.Join("/run", strings.TrimSuffix(prefix, "-")))
	}
}

// newLab brings up a lab for one test and removes it when the test ends.
func newLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	testutil.RequirePrivileged(t)
	sweepOnce.Do(sweepStaleLabs)
	cfg.Binary = buildXLB(t)
	cfg.Prefix = testPrefix()
	// Short: the daemon's Unix socket lives here (108-byte limit).
	cfg.StateDir = filepath.Join("/run", strings.TrimSuffix(cfg.Prefix, "-"))
	t.Cleanup(func() {
		if err := Down(cfg.Prefix, cfg.StateDir); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	l, err := Up(context.Background(), cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

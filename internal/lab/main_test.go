package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

// xlbBinary is the xlb binary built for the end-to-end tests: the lab runs
// its echo servers, backend-host setup and daemons from it, as a user would.
var xlbBinary string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "xlb-lab-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			xlbBinary = filepath.Join(dir, "xlb")
			out, err := exec.Command("go", "build", "-o", xlbBinary, "github.com/xlb-project/xlb/cmd/xlb").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build xlb for the lab tests: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

var labSeq atomic.Uint32

// testPrefix names a test lab's namespaces so that testutil's sweep
// recognises them (xlbt-PID-...) and they never meet "xlb lab up" (xlb-).
func testPrefix() string {
	return fmt.Sprintf("xlbt-%d-L%d-", os.Getpid(), labSeq.Add(1))
}

// newLab brings up a lab for one test and removes it when the test ends.
func newLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	testutil.RequirePrivileged(t)
	cfg.Prefix = testPrefix()
	// Short: the daemon's Unix socket lives here (108-byte limit).
	cfg.StateDir = filepath.Join("/run", strings.TrimSuffix(cfg.Prefix, "-"))
	cfg.Binary = xlbBinary
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

package packaging

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestDebianPackage builds the package, installs it with dpkg on this
// machine, checks its files, units, user, group and binary, and removes and
// purges it (scripts/deb-test.sh, which purges it on any failure too).
func TestDebianPackage(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"dpkg", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (scripts/deps.sh build installs it): %v", tool, err)
		}
	}
	cmd := exec.Command("../scripts/deb-test.sh")
	out, err := cmd.CombinedOutput()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err != nil {
		t.Fatalf("scripts/deb-test.sh: %v", err)
	}
	if !strings.Contains(string(out), "deb-test: ok:") {
		t.Fatal("scripts/deb-test.sh exited 0 without its ok line")
	}
}

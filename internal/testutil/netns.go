package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
)

// netnsPrefix starts the name of every namespace a test creates; the rest is
// the creating process's PID and a counter, so parallel test binaries never
// collide and leftovers of dead processes can be recognised and swept.
const netnsPrefix = "xlbt-"

var netnsSeq atomic.Uint32

// Netns creates a uniquely named network namespace, with lo up, that is
// deleted when the test ends, whether it passed or not. It calls
// RequirePrivileged first.
func Netns(tb testing.TB) hostnet.Netns {
	tb.Helper()
	RequirePrivileged(tb)
	sweepStaleNetns()
	name := fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1))
	ns, err := hostnet.CreateNetns(name)
	if err != nil {
		tb.Fatalf("create test netns: %v", err)
	}
	tb.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return ns
}

// Veth creates a veth pair between two ends (a zero Netns is the test's own
// namespace). Links inside test namespaces vanish with them; a link in the
// test's own namespace is deleted at cleanup.
func Veth(tb testing.TB, a, b hostnet.VethEnd) {
	tb.Helper()
	if err := hostnet.CreateVeth(a, b); err != nil {
		tb.Fatalf("create veth: %v", err)
	}
	tb.Cleanup(func() {
		_ = hostnet.DeleteLink(a.Netns, a.Name)
	})
}

// sweepStaleNetns deletes test namespaces whose creating process is gone,
// such as those of a test binary killed by a timeout.
func sweepStaleNetns() {
	entries, err := os.ReadDir(hostnet.NetnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(n)); os.IsNotExist(err) {
			_ = hostnet.Netns{Name: e.Name()}.Delete()
		}
	}
}

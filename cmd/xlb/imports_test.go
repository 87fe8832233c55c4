package main

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestVerbsTalkThroughAPI: the verbs that only talk to the daemon use the
// API package, never the daemon itself; only the daemon verb links it.
func TestVerbsTalkThroughAPI(t *testing.T) {
	const daemonPkg = "github.com/xlb-project/xlb/healthd"
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var importers []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			if p, _ := strconv.Unquote(im.Path.Value); p == daemonPkg {
				importers = append(importers, f)
			}
		}
	}
	if !slices.Equal(importers, []string{"daemon.go"}) {
		t.Errorf("files importing %s: %v, want only daemon.go", daemonPkg, importers)
	}

	out, err := exec.Command("go", "list", "-deps", "../../healthd/api").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if deps := strings.Fields(string(out)); slices.Contains(deps, daemonPkg) {
		t.Errorf("healthd/api depends on %s", daemonPkg)
	}
}

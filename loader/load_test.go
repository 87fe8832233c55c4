package loader

import (
	"testing"

	"github.com/xlb-project/xlb/internal/testutil"
)

func TestLoad(t *testing.T) {
	testutil.RequirePrivileged(t)
	d, err := Load(Options{Verbose: true, FlowTableSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p, err := LoadDecap()
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p, err = LoadSwap()
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

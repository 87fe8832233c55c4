package hostnet_test

import (
	"strings"
	"testing"

	"github.com/xlb-project/xlb/internal/hostnet"
	"github.com/xlb-project/xlb/internal/testutil"
)

func TestSysctlNames(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{name: "", wantErr: "allowed are"},
		{name: "/etc/passwd", wantErr: "allowed are"},
		{name: "net/../../etc/passwd", wantErr: "allowed are"},
		{name: "net.ipv4.no_such_setting", wantErr: "read sysctl net.ipv4.no_such_setting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hostnet.ReadSysctl(tt.name)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadSysctl(%q) error = %v, want one containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}

// TestSysctlPerNamespace checks that a sysctl written inside a namespace
// changes that namespace only.
func TestSysctlPerNamespace(t *testing.T) {
	ns := testutil.Netns(t)
	host, err := hostnet.ReadSysctl("net.ipv4.conf.all.arp_announce")
	if err != nil {
		t.Fatal(err)
	}
	want := "2"
	if host == "2" {
		want = "1"
	}
	for _, name := range []string{"net.ipv4.conf.all.arp_announce", hostnet.ConfSysctl("lo", "arp_announce")} {
		if err := ns.WriteSysctl(name, want); err != nil {
			t.Fatal(err)
		}
		got, err := ns.ReadSysctl(name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s in namespace = %q, want %q", name, got, want)
		}
	}
	after, err := hostnet.ReadSysctl("net.ipv4.conf.all.arp_announce")
	if err != nil {
		t.Fatal(err)
	}
	if after != host {
		t.Errorf("host's arp_announce changed from %q to %q", host, after)
	}
}

package api

import (
	"strings"
	"testing"
)

func TestParseVIPKey(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "203.0.113.10:80/tcp", want: "203.0.113.10:80/tcp"},
		{in: "[2001:db8:f::10]:443/tcp", want: "[2001:db8:f::10]:443/tcp"},
		{in: "203.0.113.10:*/udp", want: "203.0.113.10:*/udp"},
		{in: "203.0.113.10:80", err: "is not ADDR:PORT/PROTO"},
		{in: "203.0.113.10/tcp", err: "has no port"},
		{in: "2001:db8:f::10:443/tcp", err: "IPv6 goes in brackets"},
		{in: "203.0.113.10:0/tcp", err: "allowed are 1-65535 or *"},
		{in: "203.0.113.10:70000/tcp", err: "allowed are 1-65535 or *"},
		{in: "0.0.0.0:80/tcp", err: "not a unicast address"},
		{in: "[203.0.113.10]:80/tcp", err: "not an IPv6 address"},
	}
	for _, tt := range tests {
		k, err := ParseVIPKey(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseVIPKey(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || k.String() != tt.want {
			t.Errorf("ParseVIPKey(%q) = %v, %v; want %s", tt.in, k, err, tt.want)
		}
	}
}

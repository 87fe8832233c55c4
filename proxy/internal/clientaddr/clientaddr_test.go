package clientaddr

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddrAttacks(t *testing.T) {
	lb := netip.MustParsePrefix("10.0.0.0/8")
	xff := Source{Trusted: []netip.Prefix{lb}}
	fwd := Source{Trusted: []netip.Prefix{lb}, Forwarded: true}
	none := Source{}
	huge := strings.Repeat("10.1.1.1, ", 10000) + "10.2.2.2"
	tests := []struct {
		name     string
		src      Source
		peer     string
		xff, fwd []string
		want     string
	}{
		{"untrusted peer: X-Forwarded-For ignored", xff, "198.51.100.7", []string{"1.2.3.4"}, nil, "198.51.100.7"},
		{"untrusted peer: Forwarded ignored", fwd, "198.51.100.7", nil, []string{"for=1.2.3.4"}, "198.51.100.7"},
		{"no trusted proxies: headers ignored", none, "10.0.0.1", []string{"1.2.3.4"}, nil, "10.0.0.1"},
		{"trusted peer: rightmost hop", xff, "10.0.0.1", []string{"1.2.3.4, 198.51.100.9"}, nil, "198.51.100.9"},
		{"client-written hops left of the real one do not count", xff, "10.0.0.1", []string{"6.6.6.6", "1.2.3.4, 198.51.100.9"}, nil, "198.51.100.9"},
		{"trusted hops are skipped", xff, "10.0.0.1", []string{"198.51.100.9, 10.9.9.9, 10.8.8.8"}, nil, "198.51.100.9"},
		{"garbage stops at the last trusted hop", xff, "10.0.0.1", []string{"198.51.100.9, junk, 10.8.8.8"}, nil, "10.8.8.8"},
		{"all hops trusted: leftmost", xff, "10.0.0.1", []string{"10.3.3.3, 10.4.4.4"}, nil, "10.3.3.3"},
		{"no header from a trusted peer: the peer", xff, "10.0.0.1", nil, nil, "10.0.0.1"},
		{"mapped v4 peer", xff, "::ffff:10.0.0.1", []string{"198.51.100.9"}, nil, "198.51.100.9"},
		{"host:port hop", xff, "10.0.0.1", []string{"198.51.100.9:5555"}, nil, "198.51.100.9"},
		{"huge header of trusted hops", xff, "10.0.0.1", []string{huge}, nil, "10.1.1.1"},
		{"Forwarded configured: X-Forwarded-For is the client's and ignored", fwd, "10.0.0.1", []string{"1.2.3.4"}, []string{"for=198.51.100.9"}, "198.51.100.9"},
		{"X-Forwarded-For configured: Forwarded is ignored", xff, "10.0.0.1", []string{"198.51.100.9"}, []string{"for=1.2.3.4"}, "198.51.100.9"},
		{"Forwarded: quoted v6 with port, rightmost", fwd, "10.0.0.1", []string{}, []string{`for=1.2.3.4, for="[2001:db8::7]:4711";proto=https`}, "2001:db8::7"},
		{"Forwarded: quoted comma does not split", fwd, "10.0.0.1", nil, []string{`for=1.2.3.4;by="a,b", for=198.51.100.9`}, "198.51.100.9"},
		{"Forwarded: obfuscated hop stops", fwd, "10.0.0.1", nil, []string{`for=1.2.3.4, for=_hidden, for=10.5.5.5`}, "10.5.5.5"},
		{"Forwarded: unknown stops", fwd, "10.0.0.1", nil, []string{`for=1.2.3.4, for=unknown`}, "10.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.src.Addr(netip.MustParseAddr(tc.peer), tc.xff, tc.fwd)
			if got != netip.MustParseAddr(tc.want) {
				t.Errorf("got %v, want %s", got, tc.want)
			}
		})
	}
}

package balance

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestParseKeySource(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"", "client_ip", ""},
		{"client_ip", "client_ip", ""},
		{"path", "path", ""},
		{"header:x-user", "header:X-User", ""},
		{"cookie:session", "cookie:session", ""},
		{"query:id", "query:id", ""},
		{"header:", "", `hash key "header:": allowed client_ip`},
		{"header:bad name", "", `header name "bad name" is not a valid HTTP token`},
		{"cookie:a;b", "", `cookie name "a;b" is not a valid HTTP token`},
		{"body", "", `hash key "body": allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			k, err := ParseKeySource(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || k.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", k, err, tt.want)
			}
		})
	}
}

func TestKey(t *testing.T) {
	ip1, ip2 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::2")
	req := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	tests := []struct {
		name  string
		src   string
		a, b  *http.Request
		ipA   netip.Addr
		ipB   netip.Addr
		equal bool
	}{
		{"same client", "client_ip", req("/a"), req("/b"), ip1, ip1, true},
		{"other client", "client_ip", req("/a"), req("/a"), ip1, ip2, false},
		{"same header, other clients", "header:X-User", req("/", "X-User", "ann"), req("/", "x-user", "ann"), ip1, ip2, true},
		{"other header", "header:X-User", req("/", "X-User", "ann"), req("/", "X-User", "bob"), ip1, ip1, false},
		{"missing header: client ip", "header:X-User", req("/"), req("/x"), ip1, ip1, true},
		{"missing header vs present", "header:X-User", req("/"), req("/", "X-User", "ann"), ip1, ip1, false},
		{"same cookie", "cookie:s", req("/", "Cookie", "a=1; s=xyz"), req("/", "Cookie", "s=xyz", "Cookie", "b=2"), ip1, ip2, true},
		{"quoted cookie", "cookie:s", req("/", "Cookie", `s="xyz"`), req("/", "Cookie", "s=xyz"), ip1, ip2, true},
		{"other cookie", "cookie:s", req("/", "Cookie", "s=1"), req("/", "Cookie", "s=2"), ip1, ip1, false},
		{"cookie name is exact", "cookie:s", req("/", "Cookie", "ss=1"), req("/"), ip1, ip1, true},
		{"same path", "path", req("/x?q=1"), req("/x?q=2"), ip1, ip2, true},
		{"other path", "path", req("/x"), req("/y"), ip1, ip1, false},
		{"same query", "query:id", req("/a?x=1&id=7"), req("/b?id=7"), ip1, ip2, true},
		{"other query", "query:id", req("/a?id=8"), req("/a?id=7"), ip1, ip1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeySource(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Key(tt.a, tt.ipA) == k.Key(tt.b, tt.ipB); got != tt.equal {
				t.Errorf("keys equal = %v, want %v", got, tt.equal)
			}
		})
	}
}

func TestKeyDoesNotAllocate(t *testing.T) {
	r := httptest.NewRequest("GET", "/p/q?id=9", nil)
	r.Header.Set("X-User", "ann")
	r.Header.Set("Cookie", "a=1; session=abc; z=3")
	ip := netip.MustParseAddr("198.51.100.7")
	for _, src := range []string{"client_ip", "header:X-User", "cookie:session", "path", "query:id"} {
		k, err := ParseKeySource(src)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { k.Key(r, ip) }); n != 0 {
			t.Errorf("%s: %v allocations, want 0", src, n)
		}
	}
}

func BenchmarkKey(b *testing.B) {
	r := httptest.NewRequest("GET", "/p/q", nil)
	r.Header.Set("Cookie", "a=1; session=abc; z=3")
	k, _ := ParseKeySource("cookie:session")
	ip := netip.MustParseAddr("198.51.100.7")
	b.ReportAllocs()
	for b.Loop() {
		k.Key(r, ip)
	}
}

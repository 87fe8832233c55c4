package ratelimit

import (
	"hash/maphash"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func keyOf(s *keySpec, seed maphash.Seed, r *http.Request, addr string) uint64 {
	var k key
	s.extract(r, netip.MustParseAddr(addr), &k)
	return k.sum64(seed)
}

func TestKeyClientPrefixes(t *testing.T) {
	seed := maphash.MakeSeed()
	s := &keySpec{client: true, v4Bits: 24, v6Bits: 64}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	same := [][2]string{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"198.51.100.1", "198.51.100.200"},
		{"198.51.100.1", "::ffff:198.51.100.1"},
	}
	for _, p := range same {
		if keyOf(s, seed, r, p[0]) != keyOf(s, seed, r, p[1]) {
			t.Errorf("%s and %s: different keys, want one (same prefix)", p[0], p[1])
		}
	}
	diff := [][2]string{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"198.51.100.1", "198.51.101.1"},
	}
	for _, p := range diff {
		if keyOf(s, seed, r, p[0]) == keyOf(s, seed, r, p[1]) {
			t.Errorf("%s and %s: one key, want two (different prefixes)", p[0], p[1])
		}
	}
}

func TestKeyParts(t *testing.T) {
	seed := maphash.MakeSeed()
	s := &keySpec{header: "X-Api-Key", cookie: "sid", query: "k"}
	mk := func(hdr, cookie, query string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/?"+query, nil)
		if hdr != "" {
			r.Header.Set("X-Api-Key", hdr)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		return r
	}
	a := keyOf(s, seed, mk("a", "x=1; sid=s1", "k=q1"), "192.0.2.1")
	if a != keyOf(s, seed, mk("a", `sid="s1"`, "z=0&k=q1"), "192.0.2.99") {
		t.Error("same parts (client address not part of the key): different keys")
	}
	// Parts are length-prefixed: moving bytes between parts changes the key.
	if keyOf(s, seed, mk("ab", "sid=", "k=q1"), "192.0.2.1") == keyOf(s, seed, mk("a", "sid=b", "k=q1"), "192.0.2.1") {
		t.Error(`header "ab" + cookie "" collides with header "a" + cookie "b"`)
	}
	if a == keyOf(s, seed, mk("b", "x=1; sid=s1", "k=q1"), "192.0.2.1") {
		t.Error("different header value, same key")
	}
	// An escaped query value is the same key as the plain one.
	if a != keyOf(s, seed, mk("a", "sid=s1", "k=q%31"), "192.0.2.1") {
		t.Error("k=q%31 and k=q1: different keys")
	}
	var k key
	s.extract(mk("", "", ""), netip.MustParseAddr("192.0.2.1"), &k)
	if !s.missing(&k) {
		t.Error("no header, cookie or query: not reported missing")
	}
}

func TestKeyHugeHeaderCostsOneHash(t *testing.T) {
	// A megabyte header is hashed, not stored: the table holds 8 bytes for it.
	s := &keySpec{header: "X-Api-Key"}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Api-Key", strings.Repeat("A", 1<<20))
	var k key
	s.extract(r, netip.Addr{}, &k)
	if s.missing(&k) || len(k.vals[0]) != 1<<20 {
		t.Fatalf("huge header not read")
	}
	if got := k.shared("p:"); len(got) != len("p:")+32 {
		t.Errorf("redis key %d bytes, want prefix + 32", len(got))
	}
}

func TestCookieAndQueryParsing(t *testing.T) {
	cookies := []struct {
		lines []string
		want  string
		ok    bool
	}{
		{[]string{"a=1; sid=xyz; b=2"}, "xyz", true},
		{[]string{"a=1", "sid=second-line"}, "second-line", true},
		{[]string{"xsid=1; sidx=2"}, "", false},
		{[]string{"sid"}, "", false},
		{[]string{";;; sid=v;;"}, "v", true},
		{[]string{`sid="quoted"`}, "quoted", true},
	}
	for _, c := range cookies {
		v, ok := cookieValue(c.lines, "sid")
		if v != c.want || ok != c.ok {
			t.Errorf("cookie %q: got %q %v, want %q %v", c.lines, v, ok, c.want, c.ok)
		}
	}
	queries := []struct {
		raw, want string
		ok        bool
	}{
		{"k=1&k=2", "1", true},
		{"a=1&k", "", true},
		{"kk=1", "", false},
		{"k=%zz", "%zz", true},
		{"%6B=esc", "esc", true},
		{"k=a+b", "a b", true},
	}
	for _, q := range queries {
		v, ok := queryValue(q.raw, "k")
		if v != q.want || ok != q.ok {
			t.Errorf("query %q: got %q %v, want %q %v", q.raw, v, ok, q.want, q.ok)
		}
	}
}

package pathnorm

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	merge := Options{MergeSlashes: true}
	keep := Options{MergeSlashes: true, KeepEncodedSlashes: true}
	tests := []struct {
		in   string
		o    Options
		want string
		err  error
	}{
		{"/", merge, "/", nil},
		{"/api/v1/users", merge, "/api/v1/users", nil},
		{"/x/../admin", merge, "/admin", nil},
		{"//admin", merge, "/admin", nil},
		{"//admin", Options{}, "//admin", nil},
		{"/public/%2e%2e/admin", merge, "/admin", nil},
		{"/public/%2E./admin", merge, "/admin", nil},
		{"/public/.%2e", merge, "/", nil},
		{"/../../admin", merge, "/admin", nil},
		{"/a/./b/.", merge, "/a/b/", nil},
		{"/a/b/..", merge, "/a/", nil},
		{"/a/b/../", merge, "/a/", nil},
		{"/a//b///c/", merge, "/a/b/c/", nil},
		{"/a//../b", Options{}, "/a/b", nil},
		{"/%61dmin", merge, "/admin", nil},
		{"/%7e%41", merge, "/~A", nil},
		{"/a%20b%3f", merge, "/a%20b%3F", nil},
		{"/a%2520b", merge, "/a%2520b", nil},
		{"/a..b/.c/..d", merge, "/a..b/.c/..d", nil},
		{"*", merge, "*", nil},
		{"/a%2Fb", merge, "", ErrEncodedSlash},
		{"/a%2fb", merge, "", ErrEncodedSlash},
		{"/a%5Cb", merge, "", ErrEncodedSlash},
		{`/a\b`, merge, "", ErrEncodedSlash},
		{"/a%2Fb", keep, "/a%2Fb", nil},
		{"/a%2f..%2fb/../c", keep, "/c", nil},
		{`/a\..\b`, keep, `/a\..\b`, nil},
		{"/a%zz", merge, "", ErrBadEscape},
		{"/a%2", merge, "", ErrBadEscape},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in, tt.o)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Normalize(%q, %+v) = %q, %v; want %q, %v", tt.in, tt.o, got, err, tt.want, tt.err)
		}
	}
}

func TestNormalizeNormalPathAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = Normalize("/api/v1/users", Options{MergeSlashes: true}) }); n != 0 {
		t.Errorf("normal path: %v allocations, want 0", n)
	}
}

// FuzzNormalize: whatever the input, a result is normal (normalising it
// again changes nothing), a valid escaped path, free of dot segments and,
// when merging, of empty segments; and it names the same resource as the
// input as far as decoding unreserved characters goes.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/x/../admin", "//admin", "/public/%2e%2e/admin", "/a/./b/", "/a%2Fb", `/a\b`, "/%7E", "/a//../b"} {
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, p string, merge, keep bool) {
		if !strings.HasPrefix(p, "/") {
			return
		}
		o := Options{MergeSlashes: merge, KeepEncodedSlashes: keep}
		got, err := Normalize(p, o)
		if err != nil {
			return
		}
		again, err := Normalize(got, o)
		if err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, again %q, %v: not idempotent", p, got, again, err)
		}
		if _, err := url.PathUnescape(got); err != nil {
			t.Fatalf("Normalize(%q) = %q: not a valid escaped path: %v", p, got, err)
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("Normalize(%q) = %q: not absolute", p, got)
		}
		for i, seg := range strings.Split(got[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("Normalize(%q) = %q: dot segment %d left", p, got, i)
			}
			if merge && seg == "" && i < strings.Count(got[1:], "/") {
				t.Fatalf("Normalize(%q) = %q: empty segment with merging", p, got)
			}
			if strings.ContainsAny(seg, `\`) && !keep {
				t.Fatalf("Normalize(%q) = %q: backslash kept", p, got)
			}
		}
		if !keep && strings.Contains(strings.ToUpper(got), "%2F") {
			t.Fatalf("Normalize(%q) = %q: encoded slash kept", p, got)
		}
	})
}

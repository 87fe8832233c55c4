package h1

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// parseLean runs the lean parser on one head (the text up to and including
// the empty line).
func parseLean(head string) (*http.Request, bool) {
	s := &Server{}
	c := &conn{s: s, reqState: &reqState{hdr: http.Header{}}, remote: "198.51.100.7:4000"}
	c.base = *(&http.Request{}).WithContext(context.Background())
	if !c.parse([]byte(head)) {
		return nil, false
	}
	r := c.req
	return &r, true
}

// sameAsNetHTTP checks that a head the lean parser accepted is read the
// same way by net/http.
func sameAsNetHTTP(t *testing.T, head string, got *http.Request) {
	t.Helper()
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	if err != nil {
		t.Fatalf("lean parser accepted %q, net/http refuses it: %v", head, err)
	}
	if got.Method != want.Method || got.URL.String() != want.URL.String() || got.Host != want.Host ||
		got.RequestURI != want.RequestURI || got.Close != want.Close || got.Proto != want.Proto ||
		got.ContentLength != want.ContentLength {
		t.Fatalf("%q: lean %s %s host %q uri %q close %v cl %d; net/http %s %s host %q uri %q close %v cl %d", head,
			got.Method, got.URL, got.Host, got.RequestURI, got.Close, got.ContentLength,
			want.Method, want.URL, want.Host, want.RequestURI, want.Close, want.ContentLength)
	}
	if *got.URL != *want.URL {
		t.Fatalf("%q: lean URL %#v, net/http %#v", head, got.URL, want.URL)
	}
	gh, wh := got.Header, want.Header
	if len(gh) == 0 && len(wh) == 0 {
		return
	}
	if !reflect.DeepEqual(map[string][]string(gh), map[string][]string(wh)) {
		t.Fatalf("%q: lean header %v, net/http %v", head, gh, wh)
	}
	if b, _ := io.ReadAll(want.Body); len(b) > 0 {
		t.Fatalf("%q: lean saw no body, net/http read %q", head, b)
	}
}

func TestH1Parse(t *testing.T) {
	tests := []struct {
		name string
		head string
		lean bool // served on the lean path; else handed to net/http
	}{
		{"simple", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"query and escapes", "GET /a%20b/c?x=1&y=%2F HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n", true},
		{"plain path and query", "GET /a/b.c;d=e@f:g?x=1&y=/?z HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"empty query", "GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"two question marks", "GET /a?? HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"double slash", "GET //a/b HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"escaped characters", "GET /a!b'(c)*\"d HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"escaped slash kept raw", "GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"many fields, repeated", "DELETE /x HTTP/1.1\r\nhost: a\r\nx-a: 1\r\nX-A: 2\r\naccept:  text/html \r\nCookie: a=b\r\n\r\n", true},
		{"empty value", "GET / HTTP/1.1\r\nHost: a\r\nX-E:\r\n\r\n", true},
		{"connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", true},
		{"pragma no-cache", "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n", true},
		{"odd method", "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", true},
		{"tab in value", "GET / HTTP/1.1\r\nHost: a\r\nX-T: a\tb\r\n\r\n", true},

		{"body by length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", false},
		{"zero length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"expect", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false},
		{"websocket", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHttp2-Settings: AAAA\r\n\r\n", false},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", false},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\n", false},
		{"no host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", false},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false},
		{"absolute form", "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", false},
		{"bare LF in field", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n", false},
		{"bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", false},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", false},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", false},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", false},
		{"bad name char", "GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", false},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", false},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f\r\n\r\n", false},
		{"obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", false},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", false},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", false},
		{"no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bad method char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := parseLean(tt.head)
			if ok != tt.lean {
				t.Fatalf("lean = %v, want %v", ok, tt.lean)
			}
			if ok {
				sameAsNetHTTP(t, tt.head, r)
			}
		})
	}
}

// FuzzH1Parse: whatever the lean parser accepts, net/http reads the same
// way (method, target, host, header fields, no body).
func FuzzH1Parse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a%20b?x=1 HTTP/1.1\r\nHost: a:1\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nX-B:  v \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		i := strings.Index(head, "\r\n\r\n")
		if i < 0 {
			return
		}
		head = head[:i+4]
		if r, ok := parseLean(head); ok {
			sameAsNetHTTP(t, head, r)
		}
	})
}

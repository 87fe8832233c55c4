package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/proxy/config"
)

// matchConfig: routes answer with their own name, so the body tells which
// route matched. Order matters: first match wins.
const matchConfig = `
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: "127.0.0.1:1"}]}]
routes:
  - {name: exact-host, match: {hosts: [api.example.com], path: {prefix: /}}, respond: {body: exact-host}}
  - {name: wildcard-host, match: {hosts: ["*.example.com"]}, respond: {body: wildcard-host}}
  - {name: path-exact, match: {path: {exact: /exact}}, respond: {body: path-exact}}
  - {name: path-prefix, match: {path: {prefix: /pre}}, respond: {body: path-prefix}}
  - {name: path-pattern, match: {path: {pattern: "/users/{id}/posts"}}, respond: {body: path-pattern}}
  - {name: path-rest, match: {path: {pattern: "/files/{path...}"}}, respond: {body: path-rest}}
  - {name: method, match: {path: {prefix: /m/}, methods: [post, PUT]}, respond: {body: method}}
  - {name: header-present, match: {path: {prefix: /h/}, headers: [{name: x-flag, present: true}]}, respond: {body: header-present}}
  - {name: header-exact, match: {path: {prefix: /h/}, headers: [{name: X-Env, exact: prod}]}, respond: {body: header-exact}}
  - {name: header-regex, match: {path: {prefix: /h/}, headers: [{name: X-Env, regex: "^stag(e|ing)$"}]}, respond: {body: header-regex}}
  - {name: header-absent, match: {path: {prefix: /h/}, headers: [{name: X-Env, absent: true}]}, respond: {body: header-absent}}
  - {name: query-exact, match: {path: {prefix: /q/}, query: [{name: v, exact: "2"}]}, respond: {body: query-exact}}
  - {name: query-present, match: {path: {prefix: /q/}, query: [{name: debug}]}, respond: {body: query-present}}
  - {name: query-regex, match: {path: {prefix: /q/}, query: [{name: id, regex: "^[0-9]+$"}]}, respond: {body: query-regex}}
  - {name: fallback, respond: {status: 418, body: fallback}}
`

func TestRouteMatching(t *testing.T) {
	_, base := startProxy(t, matchConfig, Options{})
	tests := []struct {
		method, host, path string
		header             map[string]string
		want               string
	}{
		{"GET", "api.example.com", "/anything", nil, "exact-host"},
		{"GET", "API.Example.COM:8080", "/x", nil, "exact-host"},
		{"GET", "www.example.com", "/exact", nil, "wildcard-host"},
		{"GET", "a.b.example.com", "/", nil, "wildcard-host"},
		{"GET", "example.com", "/exact", nil, "path-exact"}, // wildcard needs a label
		{"GET", "other", "/exact/", nil, "fallback"},
		{"GET", "other", "/pre", nil, "path-prefix"},
		{"GET", "other", "/pre/x/y", nil, "path-prefix"},
		{"GET", "other", "/prefix", nil, "fallback"}, // prefix ends on a segment boundary
		{"GET", "other", "/users/42/posts", nil, "path-pattern"},
		{"GET", "other", "/users//posts", nil, "fallback"},
		{"GET", "other", "/users/42/posts/7", nil, "fallback"},
		{"GET", "other", "/files/a/b/c.txt", nil, "path-rest"},
		{"GET", "other", "/files", nil, "path-rest"},
		{"POST", "other", "/m/x", nil, "method"},
		{"PUT", "other", "/m/x", nil, "method"},
		{"GET", "other", "/m/x", nil, "fallback"},
		{"GET", "other", "/h/", map[string]string{"X-Flag": ""}, "header-present"},
		{"GET", "other", "/h/", map[string]string{"X-Env": "prod"}, "header-exact"},
		{"GET", "other", "/h/", map[string]string{"X-Env": "staging"}, "header-regex"},
		{"GET", "other", "/h/", map[string]string{"X-Env": "stage"}, "header-regex"},
		{"GET", "other", "/h/", map[string]string{"X-Env": "dev"}, "fallback"},
		{"GET", "other", "/h/", nil, "header-absent"},
		{"GET", "other", "/q/?v=2", nil, "query-exact"},
		{"GET", "other", "/q/?v=3&debug", nil, "query-present"},
		{"GET", "other", "/q/?id=123", nil, "query-regex"},
		{"GET", "other", "/q/?id=12a", nil, "fallback"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s%s", tc.method, tc.host, tc.path), func(t *testing.T) {
			req := mustReq(t, tc.method, base+tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tc.want {
				t.Errorf("matched route %q, want %q", body, tc.want)
			}
		})
	}
}

func TestRewriteAndHeaderOps(t *testing.T) {
	_, be := echoBackend(t, "a")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - name: strip
    match: {path: {prefix: /api/}}
    pool: app
    rewrite: {strip_prefix: /api}
    request_headers: {set: {X-Set: one, Host: internal.example}, add: {X-Add: two}, remove: [X-Secret]}
    response_headers: {set: {X-Resp: yes}, remove: [X-Backend-Internal]}
  - name: replace
    match: {path: {prefix: /v1/}}
    pool: app
    rewrite: {strip_prefix: /v1, replace_prefix: /api/v2}
  - name: regex
    match: {path: {pattern: "/u/{id}"}}
    pool: app
    rewrite: {regex: "^/u/([0-9]+)$", replacement: "/users?id=$1"}
  - name: whole
    match: {path: {exact: /api}}
    pool: app
    rewrite: {strip_prefix: /api}
`, be)
	_, base := startProxy(t, cfg, Options{})
	tests := []struct {
		path, wantPath, wantQuery string
	}{
		{"/api/users/1", "/users/1", ""},
		{"/api/x?a=b", "/x", "a=b"},
		{"/api", "/", ""},
		{"/v1/items", "/api/v2/items", ""},
		{"/u/42", "/users?id=42", ""}, // a regex replacement is a path: "?" is escaped, not a query
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			req := mustReq(t, "GET", base+tc.path, nil)
			req.Header.Set("X-Secret", "s")
			req.Header.Set("X-Add", "one")
			resp, e := getEcho(t, nil, req)
			if e.Path != tc.wantPath || e.Query != tc.wantQuery {
				t.Errorf("backend saw path %q query %q, want %q %q", e.Path, e.Query, tc.wantPath, tc.wantQuery)
			}
			if strings.HasPrefix(tc.path, "/api/") {
				if e.Header.Get("X-Set") != "one" || strings.Join(e.Header["X-Add"], ",") != "one,two" || e.Header.Get("X-Secret") != "" {
					t.Errorf("request header ops not applied: %v", e.Header)
				}
				if e.Host != "internal.example" {
					t.Errorf("Host = %q, want internal.example", e.Host)
				}
				if resp.Header.Get("X-Resp") != "yes" {
					t.Errorf("response header X-Resp missing: %v", resp.Header)
				}
			}
		})
	}
}

func TestRedirectAndRespond(t *testing.T) {
	cfg := `
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: "127.0.0.1:1"}]}]
routes:
  - {name: https, match: {path: {prefix: /secure/}}, redirect: {scheme: https, code: 308}}
  - {name: moved, match: {path: {prefix: /old/}}, redirect: {host: new.example.com, path: /new, strip_query: true, code: 301}}
  - {name: teapot, match: {path: {exact: /tea}}, respond: {status: 418, body: "short and stout", content_type: text/x-tea}, response_headers: {set: {X-Pot: "1"}}}
`
	_, base := startProxy(t, cfg, Options{})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		path       string
		wantStatus int
		wantLoc    string
		wantBody   string
	}{
		{"/secure/a?x=1", 308, "https://shop.example/secure/a?x=1", ""},
		{"/old/page?x=1", 301, "http://new.example.com/new", ""},
		{"/tea", 418, "", "short and stout"},
		{"/none", 404, "", "no route matches the request\n"},
	}
	for _, tc := range tests {
		req := mustReq(t, "GET", base+tc.path, nil)
		req.Host = "shop.example:8080"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != tc.wantLoc {
			t.Errorf("%s: got %d Location %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus, tc.wantLoc)
		}
		if tc.wantBody != "" && string(body) != tc.wantBody {
			t.Errorf("%s: body %q, want %q", tc.path, body, tc.wantBody)
		}
		if tc.path == "/tea" && (resp.Header.Get("Content-Type") != "text/x-tea" || resp.Header.Get("X-Pot") != "1") {
			t.Errorf("/tea headers %v", resp.Header)
		}
	}
}

func TestPathMatchUnit(t *testing.T) {
	segs, err := config.ParsePattern("/a/{x}/b/{rest...}")
	if err != nil {
		t.Fatal(err)
	}
	m := pathMatch{kind: pathPattern, pattern: segs}
	for path, want := range map[string]bool{
		"/a/1/b": true, "/a/1/b/": true, "/a/1/b/c/d": true, "/a//b/c": false, "/a/1/c/d": false, "/a/1": false,
	} {
		if got := m.match(path); got != want {
			t.Errorf("match(%q) = %v, want %v", path, got, want)
		}
	}
	for _, bad := range []string{"/a/{", "/a/{x...}/b", "/a/b{x}", "/{...}"} {
		if _, err := config.ParsePattern(bad); err == nil {
			t.Errorf("ParsePattern(%q) accepted", bad)
		}
	}
	u, _ := url.Parse("/api")
	(&rewrite{strip: "/api"}).apply(u)
	if u.Path != "/" {
		t.Errorf("strip whole path: %q", u.Path)
	}
}

// TestPathNormalizedBeforeRouting: a rule on /admin cannot be passed by
// spelling the path another way, and the backend gets the normalised path.
func TestPathNormalizedBeforeRouting(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - {name: admin, match: {path: {prefix: /admin}}, respond: {status: 403, body: no}}
  - {name: all, pool: app}
`, be), Options{})
	tests := []struct {
		target  string
		status  int
		backend string // the target the backend must see
	}{
		{"/x/../admin", 403, ""},
		{"//admin", 403, ""},
		{"/public/%2e%2e/admin", 403, ""},
		{"/public/.%2E/admin/x", 403, ""},
		{"/%61dmin", 403, ""},
		{"/./admin", 403, ""},
		{"/../../admin", 403, ""},
		{"/public/../x?q=/../admin", 200, "/x?q=/../admin"},
		{"/public//a/./b%7e%20c", 200, "/public/a/b~%20c"},
		{"/administrator", 200, "/administrator"},
		{"/a%2Fb", 400, ""},
		{"/a%5cb", 400, ""},
	}
	for _, tt := range tests {
		resps := rawExchange(t, base, "GET "+tt.target+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if len(resps) == 0 || resps[0].StatusCode != tt.status {
			t.Errorf("%s: responses %v, want %d", tt.target, statuses(resps), tt.status)
			continue
		}
		if tt.backend != "" {
			if e := decodeEcho(t, resps[0]); e.URI != tt.backend {
				t.Errorf("%s: backend got %q, want %q", tt.target, e.URI, tt.backend)
			}
		}
	}
}

// TestRewriteKeepsEncodings: strip_prefix works on the escaped path, so an
// encoded "/" (allowed here) and other encodings reach the backend as sent.
func TestRewriteKeepsEncodings(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
path_normalization: {encoded_slashes: keep, merge_slashes: false}
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - {name: files, match: {path: {prefix: /files}}, pool: app, rewrite: {strip_prefix: /files}}
  - {name: v1, match: {path: {prefix: /v1}}, pool: app, rewrite: {strip_prefix: /v1, replace_prefix: "/new api"}}
  - {name: all, pool: app}
`, be), Options{})
	for target, want := range map[string]string{
		"/files/a%2Fb":        "/a%2Fb",
		"/files/x%3Fy%23z":    "/x%3Fy%23z",
		"/fil%65s/a%2Fb":      "/a%2Fb",
		"/files//c":           "//c",
		"/v1/a%2Fb?q=1":       "/new%20api/a%2Fb?q=1",
		"/other/a%2Fb%5Cc":    "/other/a%2Fb%5Cc",
		"/files/./a%2F..%2Fb": "/a%2F..%2Fb",
	} {
		resps := rawExchange(t, base, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if len(resps) == 0 || resps[0].StatusCode != 200 {
			t.Errorf("%s: responses %v, want 200", target, statuses(resps))
			continue
		}
		if e := decodeEcho(t, resps[0]); e.URI != want {
			t.Errorf("%s: backend got %q, want %q", target, e.URI, want)
		}
	}
}

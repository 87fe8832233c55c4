package proxy

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-project/xlb/proxy/config"
)

func stickyCookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestStickyCookies(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	key1, key2 := strings.Repeat("k", 32), strings.Repeat("n", 32)
	cfgFor := func(keys string) string {
		return fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}, {address: %q}]
    sticky: {keys: [%s], name: sid, ttl: 10m, http_only: true, same_site: lax}
routes: [{name: all, pool: app}]
`, a, b, keys)
	}
	p, base := startProxy(t, cfgFor(fmt.Sprintf("%q", key1)), Options{})
	get := func(c *http.Cookie) (*http.Response, echo) {
		req := mustReq(t, "GET", base+"/", nil)
		if c != nil {
			req.AddCookie(c)
		}
		return getEcho(t, nil, req)
	}
	resp, first := get(nil)
	ck := stickyCookie(resp, "sid")
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.MaxAge != 600 {
		t.Fatalf("sticky cookie %+v", ck)
	}
	// With the cookie, every request goes to the same backend and no new
	// cookie is set.
	for i := 0; i < 6; i++ {
		resp, e := get(ck)
		if e.Name != first.Name {
			t.Fatalf("request %d with cookie went to %q, want %q", i, e.Name, first.Name)
		}
		if stickyCookie(resp, "sid") != nil {
			t.Errorf("cookie re-set although valid")
		}
	}
	// A tampered cookie falls back to normal selection and is replaced.
	bad := &http.Cookie{Name: "sid", Value: ck.Value[:len(ck.Value)-2] + "AA"}
	resp, _ = get(bad)
	if nc := stickyCookie(resp, "sid"); nc == nil || nc.Value == bad.Value {
		t.Errorf("tampered cookie not replaced: %+v", nc)
	}
	// Draining the sticky backend moves the client and rewrites the cookie.
	addr := map[string]string{"a": a, "b": b}[first.Name]
	if err := p.Drain("app", addr); err != nil {
		t.Fatal(err)
	}
	resp, e := get(ck)
	if e.Name == first.Name {
		t.Fatalf("drained sticky backend still used")
	}
	moved := stickyCookie(resp, "sid")
	if moved == nil {
		t.Fatal("cookie not rewritten after drain")
	}
	if err := p.Undrain("app", addr); err != nil {
		t.Fatal(err)
	}
	if _, e2 := get(moved); e2.Name != e.Name {
		t.Errorf("rewritten cookie leads to %q, want %q", e2.Name, e.Name)
	}
	// Key rotation: a new key first, the old one still verifies.
	c, err := config.Parse([]byte(cfgFor(fmt.Sprintf("%q, %q", key2, key1))))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	resp, e3 := get(moved)
	if e3.Name != e.Name || stickyCookie(resp, "sid") != nil {
		t.Errorf("cookie signed by the old key not honoured after rotation")
	}
	// Once the old key is dropped, its cookies are refused.
	c, _ = config.Parse([]byte(cfgFor(fmt.Sprintf("%q", key2))))
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(moved); stickyCookie(resp, "sid") == nil {
		t.Errorf("cookie signed by a dropped key still accepted")
	}
}

func TestOutlierEjection(t *testing.T) {
	_, a := echoBackend(t, "a")
	srvB, b := echoBackend(t, "b")
	srvB.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	})
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}, {address: %q}]
    outlier: {consecutive_failures: 2, base_ejection: 1h, max_ejection: 2h, max_ejected_percent: 50}
routes: [{name: all, pool: app}]
`, a, b)
	_, base := startProxy(t, cfg, Options{})
	fails := 0
	for i := 0; i < 20; i++ {
		resp, _ := getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
		if resp.StatusCode == 503 {
			fails++
		}
	}
	// Round robin: b answers 503 twice, then is ejected for an hour.
	if fails != 2 {
		t.Errorf("%d failed requests, want 2 before ejection", fails)
	}
}

func TestFileDiscovery(t *testing.T) {
	_, a := echoBackend(t, "a")
	_, b := echoBackend(t, "b")
	dir := t.TempDir()
	list := filepath.Join(dir, "backends.txt")
	write := func(s string) {
		tmp := list + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, list); err != nil {
			t.Fatal(err)
		}
	}
	write(a + "\n")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, discovery: {file: %q, interval: 20ms}}]
routes: [{name: all, pool: app}]
`, list)
	p, base := startProxy(t, cfg, Options{})
	waitFor(t, "first discovery", func() bool { return len(p.Backends()) == 1 })
	if _, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil)); e.Name != "a" {
		t.Fatalf("discovered backend not used: %q", e.Name)
	}
	write("# now b only\n" + b + " 2\n")
	waitFor(t, "b discovered", func() bool { l := p.Backends(); return len(l) == 1 && l[0].Address == b && l[0].Weight == 2 })
	if _, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil)); e.Name != "b" {
		t.Fatalf("request went to %q after discovery change", e.Name)
	}
}

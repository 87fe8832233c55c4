package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/proxy/internal/clientaddr"
)

func parseYAML(t testing.TB, src string) (*Config, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return ParseConfig(&n)
}

type rig struct {
	set     *Set
	m       *Metrics
	lim     *Limiter
	h       http.Handler
	reached int
}

func newRig(t testing.TB, src string, client func(http.ResponseWriter, *http.Request) netip.Addr) *rig {
	t.Helper()
	c, err := parseYAML(t, src)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	g := &rig{m: NewMetrics()}
	g.set = NewSet(nil, g.m)
	t.Cleanup(g.set.Close)
	opts := Options{Route: "r"}
	if client != nil {
		opts.Client = client
	}
	g.lim = g.set.Limiter(c, opts)
	g.h = g.lim.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.reached++
		w.WriteHeader(http.StatusOK)
	}))
	return g
}

func (g *rig) do(remote string, mod func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.RemoteAddr = remote
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	g.h.ServeHTTP(w, r)
	return w
}

func (g *rig) count(result string) float64 {
	return promtest.ToFloat64(g.m.decisions.WithLabelValues("r", g.lim.cfg.Name, result))
}

func TestLimit429WithFields(t *testing.T) {
	g := newRig(t, "name: api\nrate: 2\nper: 1m\nburst: 3\n", nil)
	for i := range 3 {
		w := g.do("198.51.100.1:1000", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, w.Code)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"api";q=2;w=60`; got != want {
			t.Errorf("RateLimit-Policy %q, want %q", got, want)
		}
		if got, want := w.Header().Get("RateLimit"), fmt.Sprintf(`"api";r=%d;t=%d`, 2-i, 30*(i+1)); got != want {
			t.Errorf("request %d: RateLimit %q, want %q", i, got, want)
		}
	}
	w := g.do("198.51.100.1:1001", nil)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d, want 429", w.Code)
	}
	if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); ra < 29 || ra > 30 {
		t.Errorf("Retry-After %q, want 30 (one request per 30s)", w.Header().Get("Retry-After"))
	}
	if got := w.Header().Get(LimitHeader); got != "api" {
		t.Errorf("%s %q, want api", LimitHeader, got)
	}
	if g.reached != 3 {
		t.Errorf("handler reached %d times, want 3", g.reached)
	}
	// Another client is not affected.
	if w := g.do("198.51.100.2:1000", nil); w.Code != http.StatusOK {
		t.Errorf("other client: %d", w.Code)
	}
	if a, l := g.count("allowed"), g.count("limited"); a != 4 || l != 1 {
		t.Errorf("metrics allowed %v limited %v, want 4 and 1", a, l)
	}
}

func TestSpoofedForwardedForDoesNotChangeKey(t *testing.T) {
	// The client as the proxy judges it (proxy/internal/clientaddr).
	src := &clientaddr.Source{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	g := newRig(t, "rate: 1\nper: 1h\n", func(w http.ResponseWriter, r *http.Request) netip.Addr {
		return src.Addr(remoteAddr(w, r), r.Header["X-Forwarded-For"], r.Header["Forwarded"])
	})
	spoof := func(i int) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
			r.Header.Set("Forwarded", fmt.Sprintf("for=203.0.113.%d", i))
		}
	}
	// An untrusted client rotating X-Forwarded-For gets one request, not 50.
	ok := 0
	for i := range 50 {
		if g.do("198.51.100.7:1", spoof(i)).Code == http.StatusOK {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("untrusted client with spoofed X-Forwarded-For: %d admitted, want 1", ok)
	}
	// Behind a trusted proxy, each real client has its own key.
	for i := range 5 {
		if c := g.do("10.0.0.1:1", spoof(i)).Code; c != http.StatusOK {
			t.Errorf("client %d behind trusted proxy: %d", i, c)
		}
	}
}

func TestShadowCountsButAdmits(t *testing.T) {
	g := newRig(t, "rate: 1\nper: 1h\nshadow: true\n", nil)
	for range 5 {
		w := g.do("198.51.100.1:1", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("shadow mode refused: %d", w.Code)
		}
		if w.Header().Get("RateLimit") != "" {
			t.Errorf("shadow mode sent RateLimit fields")
		}
	}
	if a, s, l := g.count("allowed"), g.count("shadow_limited"), g.count("limited"); a != 1 || s != 4 || l != 0 {
		t.Errorf("allowed %v shadow_limited %v limited %v, want 1 4 0", a, s, l)
	}
}

func TestAPIKeyTable(t *testing.T) {
	g := newRig(t, `
name: keys
rate: 1
per: 1h
key: {header: X-Api-Key}
keys:
  - {name: gold, value: k-gold, rate: 5}
  - {value: k-silver, rate: 2}
missing: deny
`, nil)
	with := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("X-Api-Key", v) }
	}
	admitted := func(v string) int {
		n := 0
		for range 10 {
			if g.do("198.51.100.1:1", with(v)).Code == http.StatusOK {
				n++
			}
		}
		return n
	}
	if n := admitted("k-gold"); n != 5 {
		t.Errorf("gold key: %d admitted, want 5", n)
	}
	if n := admitted("k-silver"); n != 2 {
		t.Errorf("silver key: %d admitted, want 2", n)
	}
	if n := admitted("someone-else"); n != 1 {
		t.Errorf("unknown key: %d admitted, want the default 1", n)
	}
	if w := g.do("198.51.100.1:1", with("k-gold")); !strings.Contains(w.Header().Get("RateLimit"), `"gold"`) {
		t.Errorf("RateLimit %q does not name the gold policy", w.Header().Get("RateLimit"))
	}
	if w := g.do("198.51.100.1:1", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("missing key: %d, want 401", w.Code)
	}
	if g.count("denied_missing_key") != 1 {
		t.Errorf("denied_missing_key not counted")
	}
}

func TestUnknownKeyDenied(t *testing.T) {
	g := newRig(t, "rate: 1\nkey: {query: api_key}\nkeys: [{value: good, rate: 3}]\nunknown: deny\n", nil)
	if c := g.do("198.51.100.1:1", func(r *http.Request) { r.URL.RawQuery = "api_key=bad" }).Code; c != http.StatusForbidden {
		t.Errorf("unknown key: %d, want 403", c)
	}
	if c := g.do("198.51.100.1:1", func(r *http.Request) { r.URL.RawQuery = "api_key=good" }).Code; c != http.StatusOK {
		t.Errorf("known key: %d", c)
	}
}

func TestManyKeysStayBounded(t *testing.T) {
	// An attacker rotating IPv6 /64s fills at most max_keys; each /64 gets
	// its own bucket, and clients inside one /64 share it.
	g := newRig(t, "rate: 1\nper: 1h\nmax_keys: 1024\n", nil)
	for i := range 5000 {
		g.do(fmt.Sprintf("[2001:db8:%x:%x::1]:1", i>>16, i&0xffff), nil)
	}
	if n := g.lim.state.local.len(); n > 1024 {
		t.Errorf("%d keys held, max_keys 1024", n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.m.Collectors()...)
	keys, _ := promtest.GatherAndCount(reg, "xlb_proxy_ratelimit_keys")
	if keys != 1 {
		t.Errorf("%d xlb_proxy_ratelimit_keys series, want 1", keys)
	}
	if err := promtest.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP xlb_proxy_ratelimit_keys Keys a limit holds in this proxy's memory (route is empty for a global limit).
# TYPE xlb_proxy_ratelimit_keys gauge
xlb_proxy_ratelimit_keys{limit="default",route="r"} %d
`, g.lim.state.local.len())), "xlb_proxy_ratelimit_keys"); err != nil {
		t.Error(err)
	}
	if ev := g.lim.state.local.evictions.Load(); ev < 5000-1024 {
		t.Errorf("%d evictions, want at least %d", ev, 5000-1024)
	}
	if c := g.do("[2001:db8:ffff:1::1]:1", nil).Code; c != http.StatusOK {
		t.Fatalf("new /64: %d", c)
	}
	if c := g.do("[2001:db8:ffff:1::2]:1", nil).Code; c != http.StatusTooManyRequests {
		t.Errorf("second address of the same /64: %d, want 429", c)
	}
}

func TestReloadKeepsBuckets(t *testing.T) {
	g := newRig(t, "rate: 1\nper: 1h\n", nil)
	g.do("198.51.100.1:1", nil)
	c, _ := parseYAML(t, "rate: 1\nper: 1h\n")
	l2 := g.set.Limiter(c, Options{Route: "r"})
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "198.51.100.1:1"
	if l2.admit(w, r) {
		t.Error("after a reload with the same limit, the client got a fresh burst")
	}
	// A limit whose name changed gets its own state; the old one is closed
	// once no limiter holds it.
	c3, _ := parseYAML(t, "name: other\nrate: 1\nper: 1h\n")
	l3 := g.set.Limiter(c3, Options{Route: "r"})
	if g.set.limits() != 2 {
		t.Fatalf("%d limit states, want 2", g.set.limits())
	}
	g.lim, g.h, l2 = nil, nil, nil
	testutil.Eventually(t, 5*time.Second, "the unused limit state to be closed", func() bool {
		runtime.GC()
		return g.set.limits() == 1
	})
	runtime.KeepAlive(l3)
}

func TestConfigErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"rate: 0\n", "rate 0: is required"},
		{"rate: 1\nbogus: 1\n", "line 2: field bogus not found"},
		{"rate: 1\nkey: {hedaer: X}\n", "line 2: field hedaer not found in KeyConfig"},
		{"rate: 1\nper: 1y\n", `duration "1y"`},
		{"rate: 1\nkey: {ipv6_prefix: 129}\n", "key.ipv6_prefix 129: 1 to 128"},
		{"rate: 1\nkeys: [{value: a, rate: 1}]\n", "need exactly one of key.header"},
		{"rate: 1\nkey: {header: X}\nkeys: [{value: a, rate: 1}, {value: a, rate: 2}]\n", "keys[1].value"},
		{"rate: 1\nheaders: some\n", `headers "some": all, limited or none`},
		{"rate: 1\nredis: {address: nowhere}\n", `redis.address "nowhere": host:port`},
		{"rate: 1\nredis: {address: 127.0.0.1:1, on_error: maybe}\n", `redis.on_error "maybe"`},
		{"rate: 1\nname: 'a b'\n", `name "a b"`},
		{"rate: 1\nkey: {header: 'a b'}\n", `key.header "a b"`},
	}
	for _, c := range cases {
		_, err := parseYAML(t, c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.src, err, c.want)
		}
	}
}

// BenchmarkLocalAllow is the hot path of a limit that never triggers: one
// key per client, 1024 clients.
func BenchmarkLocalAllow(b *testing.B) {
	for _, headers := range []string{"none", "all"} {
		b.Run("headers="+headers, func(b *testing.B) {
			g := newRig(b, "rate: 1000000000\nburst: 1000000\nheaders: "+headers+"\n", nil)
			reqs := make([]*http.Request, 1024)
			for i := range reqs {
				reqs[i] = httptest.NewRequest(http.MethodGet, "/", nil)
				reqs[i].RemoteAddr = fmt.Sprintf("198.51.%d.%d:1", i>>8, i&255)
			}
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				clear(w.h)
				if !g.lim.admit(w, reqs[i&1023]) {
					b.Fatal("limited")
				}
				i++
			}
		})
	}
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

func TestLocalConcurrentOneKey(t *testing.T) {
	g := newRig(t, "rate: 100\nburst: 10\n", nil)
	var admitted atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &nopWriter{h: http.Header{}}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = "198.51.100.1:1"
			for range 2000 {
				if g.lim.admit(w, r) {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	bound := int64(100*time.Since(start).Seconds()) + 10
	if n := admitted.Load(); n > bound || n < 10 {
		t.Errorf("admitted %d from 8 goroutines, want 10..%d", n, bound)
	}
}

func TestGlobalLimitSharedByRoutes(t *testing.T) {
	set := NewSet(nil, nil)
	t.Cleanup(set.Close)
	mk := func(route, src string) *Limiter {
		c, err := parseYAML(t, src)
		if err != nil {
			t.Fatal(err)
		}
		return set.Limiter(c, Options{Route: route})
	}
	a := mk("a", "name: all\nrate: 1\nper: 1h\nglobal: true\n")
	b := mk("b", "name: all\nrate: 1\nper: 1h\nglobal: true\n")
	own := mk("c", "name: all\nrate: 1\nper: 1h\n")
	if decide(a, "198.51.100.1:1") != http.StatusOK {
		t.Fatal("first request refused")
	}
	if c := decide(b, "198.51.100.1:1"); c != http.StatusTooManyRequests {
		t.Errorf("global limit on another route: %d, want 429 (shared bucket)", c)
	}
	if c := decide(own, "198.51.100.1:1"); c != http.StatusOK {
		t.Errorf("route's own limit of the same name: %d, want 200", c)
	}
}

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/proxy/middleware"
	"github.com/xlb-project/xlb/proxy/middleware/ratelimit"
)

func rateLimitOptions(t *testing.T) Options {
	m := ratelimit.NewMetrics()
	set := ratelimit.NewSet(nil, m)
	t.Cleanup(set.Close)
	return Options{Middleware: map[string]middleware.Factory{ratelimit.Kind: set.Factory()}, Collectors: m.Collectors()}
}

func metricsText(t *testing.T, p *Proxy) string {
	t.Helper()
	rec := &strings.Builder{}
	w := &textWriter{h: http.Header{}, b: rec}
	p.Metrics().ServeHTTP(w, mustReq(t, http.MethodGet, "/metrics", nil))
	return rec.String()
}

type textWriter struct {
	h http.Header
	b *strings.Builder
}

func (w *textWriter) Header() http.Header         { return w.h }
func (w *textWriter) Write(p []byte) (int, error) { return w.b.Write(p) }
func (w *textWriter) WriteHeader(int)             {}

// TestRateLimitThroughProxy: the limit keys on the client the proxy judged:
// behind a trusted proxy each X-Forwarded-For client has its own bucket; a
// client that is not trusted cannot escape its bucket with the header.
func TestRateLimitThroughProxy(t *testing.T) {
	_, be := echoBackend(t, "be")
	cfg := func(trusted string) string {
		return fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
trusted_proxies: [%s]
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - name: api
    pool: app
    middleware:
      - kind: ratelimit
        config: {name: per-client, rate: 2, per: 1h}
`, trusted, be)
	}
	get := func(url, xff string) *http.Response {
		req := mustReq(t, http.MethodGet, url+"/", nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	p, url := startProxy(t, cfg("127.0.0.0/8"), rateLimitOptions(t))
	for i := range 2 {
		if r := get(url, "198.51.100.1"); r.StatusCode != 200 || r.Header.Get("RateLimit") != fmt.Sprintf(`"per-client";r=%d;t=%d`, 1-i, 1800*(i+1)) {
			t.Fatalf("request %d: %d, RateLimit %q", i, r.StatusCode, r.Header.Get("RateLimit"))
		}
	}
	r := get(url, "198.51.100.1")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || r.Header.Get("RateLimit-Policy") != `"per-client";q=2;w=3600` {
		t.Errorf("third request: %d %v", r.StatusCode, r.Header)
	}
	if r := get(url, "198.51.100.2"); r.StatusCode != 200 {
		t.Errorf("another client behind the trusted proxy: %d", r.StatusCode)
	}
	m := metricsText(t, p)
	for _, want := range []string{
		`xlb_proxy_ratelimit_decisions_total{limit="per-client",result="allowed",route="api"} 3`,
		`xlb_proxy_ratelimit_decisions_total{limit="per-client",result="limited",route="api"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Not trusted: rotating X-Forwarded-For does not make new clients.
	_, url = startProxy(t, cfg(""), rateLimitOptions(t))
	ok := 0
	for i := range 10 {
		if get(url, fmt.Sprintf("203.0.113.%d", i)).StatusCode == 200 {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("untrusted client rotating X-Forwarded-For: %d admitted, want 2", ok)
	}
}

// heldBackend holds every request until release is closed.
func heldBackend(t *testing.T) (addr string, inside *atomic.Int64, release func()) {
	t.Helper()
	inside = new(atomic.Int64)
	gate := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		<-gate
		inside.Add(-1)
	})}
	go srv.Serve(ln)
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); srv.Close() })
	return ln.Addr().String(), inside, release
}

func TestMaxInFlight(t *testing.T) {
	for _, scope := range []string{"route", "pool"} {
		t.Run(scope, func(t *testing.T) {
			be, inside, release := heldBackend(t)
			routeMax, poolMax := "", ""
			if scope == "route" {
				routeMax = "max_in_flight: 2"
			} else {
				poolMax = ", max_in_flight: 2"
			}
			p, url := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}]%s}]
routes: [{name: slow, pool: app, %s}]
`, be, poolMax, routeMax), Options{})
			var wg sync.WaitGroup
			codes := make(chan int, 2)
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := http.Get(url + "/")
					if err != nil {
						codes <- 0
						return
					}
					resp.Body.Close()
					codes <- resp.StatusCode
				}()
			}
			testutil.Eventually(t, 5*time.Second, "two requests inside the backend", func() bool { return inside.Load() == 2 })
			resp, err := http.Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := scope + "_max_in_flight; name=" + map[string]string{"route": "slow", "pool": "app"}[scope]
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Xlb-Limit") != want {
				t.Errorf("third request: %d, Xlb-Limit %q; want 503 and %q", resp.StatusCode, resp.Header.Get("Xlb-Limit"), want)
			}
			release()
			wg.Wait()
			for range 2 {
				if c := <-codes; c != 200 {
					t.Errorf("held request: %d", c)
				}
			}
			if resp, err := http.Get(url + "/"); err != nil || resp.StatusCode != 200 {
				t.Errorf("after the release: %v %v", resp, err)
			} else {
				resp.Body.Close()
			}
			if m := metricsText(t, p); !strings.Contains(m, fmt.Sprintf(`xlb_proxy_refused_total{limit="%s_max_in_flight",name=%q} 1`, scope, map[string]string{"route": "slow", "pool": "app"}[scope])) {
				t.Errorf("refusal not counted")
			}
		})
	}
}

func TestMaxConnectionsPerClient(t *testing.T) {
	_, be := echoBackend(t, "be")
	p, url := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", max_connections_per_client: 2}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, be), Options{})
	addr := strings.TrimPrefix(url, "http://")
	request := func(c net.Conn) (*http.Response, error) {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp, err := request(c); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection within the limit: %v %v", resp, err)
		}
		held = append(held, c)
	}
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	resp, err := request(c3)
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Xlb-Limit") != "max_connections_per_client; name=web" {
		t.Fatalf("third connection: %v %v", resp, err)
	}
	if n, err := c3.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("refused connection stays open")
	}
	held[0].Close()
	testutil.Eventually(t, 5*time.Second, "a new connection accepted once one closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		resp, err := request(c)
		return err == nil && resp.StatusCode == 200
	})
	if m := metricsText(t, p); !strings.Contains(m, `xlb_proxy_refused_total{limit="max_connections_per_client",name="web"}`) {
		t.Errorf("refusal not counted")
	}
}

// TestClientAddressHeaderForwarded: with client_address_header: forwarded,
// the client behind a trusted proxy is read from Forwarded, and an
// X-Forwarded-For the client wrote does not change it.
func TestClientAddressHeaderForwarded(t *testing.T) {
	_, be := echoBackend(t, "be")
	_, url := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
trusted_proxies: [127.0.0.0/8]
client_address_header: forwarded
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - name: api
    pool: app
    middleware: [{kind: ratelimit, config: {rate: 1, per: 1h}}]
`, be), rateLimitOptions(t))
	get := func(fwd, xff string) int {
		req := mustReq(t, http.MethodGet, url+"/", nil)
		req.Header.Set("Forwarded", fwd)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(`for=198.51.100.1;proto=http`, "203.0.113.1"); c != 200 {
		t.Fatalf("first: %d", c)
	}
	if c := get(`for=198.51.100.1`, "203.0.113.2"); c != http.StatusTooManyRequests {
		t.Errorf("same Forwarded client, other X-Forwarded-For: %d, want 429", c)
	}
	if c := get(`for="[2001:db8::1]:443"`, "203.0.113.1"); c != 200 {
		t.Errorf("another Forwarded client: %d, want 200", c)
	}
}

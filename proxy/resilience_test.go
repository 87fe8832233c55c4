package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
)

// TestBreakerHalfOpenExactProbes trips a backend's breaker, waits for
// half-open and sends 50 requests at once while the backend holds every
// request it gets: exactly `probes` of them reach it, the others are
// answered without it; the probes' success closes the breaker.
func TestBreakerHalfOpenExactProbes(t *testing.T) {
	be := newCtlBackend(t, "a")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}]
    breaker: {consecutive_failures: 3, open_base: 300ms, open_max: 300ms, jitter: -1, probes: 3}
routes: [{name: all, pool: app}]
`, be.addr), Options{})
	be.mode.Store(mode503)
	for range 3 {
		if st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 503 {
			t.Fatalf("status %d from a failing backend", st)
		}
	}
	if got := backendInfo(p, be.addr).Breaker; got != "open" {
		t.Fatalf("breaker %q after 3 failures in a row, want open", got)
	}
	before := be.hits.Load()
	if st, _, body := do(t, mustReq(t, "GET", base+"/", nil)); st != 503 || !strings.Contains(body, "no backend") {
		t.Fatalf("open breaker: %d %q, want 503 no backend", st, body)
	}
	if be.hits.Load() != before {
		t.Fatal("a request reached the backend through an open breaker")
	}
	be.mode.Store(modeHold)
	testutil.Eventually(t, 10*time.Second, "half-open", func() bool { return backendInfo(p, be.addr).Breaker == "half_open" })

	const n = 50
	var refused atomic.Int64
	statuses := make(chan int, n)
	for range n {
		go func() {
			st, _, _ := do(t, mustReq(t, "GET", base+"/", nil))
			if st == 503 {
				refused.Add(1)
			}
			statuses <- st
		}()
	}
	testutil.Eventually(t, 20*time.Second, "all but the probes refused", func() bool { return refused.Load() == n-3 })
	testutil.Eventually(t, 10*time.Second, "the probes at the backend", func() bool { return be.hits.Load()-before == 3 })
	be.unhold()
	ok := 0
	for range n {
		if <-statuses == 200 {
			ok++
		}
	}
	if got := be.hits.Load() - before; got != 3 || ok != 3 {
		t.Fatalf("half-open let %d requests through (%d answered 200), want exactly 3", got, ok)
	}
	testutil.Eventually(t, 5*time.Second, "closed after the probes succeeded", func() bool { return backendInfo(p, be.addr).Breaker == "closed" })
	rec := httptestRecorder(p)
	if !strings.Contains(rec, `xlb_proxy_breaker_transitions_total{backend="`+be.addr+`",pool="app",to="open"} 1`) ||
		!strings.Contains(rec, `xlb_proxy_breaker_state{backend="`+be.addr+`",pool="app"} 0`) {
		t.Fatalf("breaker metrics missing:\n%s", grepLines(rec, "breaker"))
	}
}

// TestClientErrorNeverCounts: a client that sends less body than it
// announced fails its own request; the backend's breaker (one failure
// opens it) stays closed.
func TestClientErrorNeverCounts(t *testing.T) {
	be := newCtlBackend(t, "a")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}]
    breaker: {consecutive_failures: 1}
routes: [{name: all, pool: app, retry: {attempts: 2, non_idempotent: true}}]
`, be.addr), Options{})
	for range 3 {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
	}
	if got := backendInfo(p, be.addr).Breaker; got != "closed" {
		t.Fatalf("breaker %q after client body errors, want closed", got)
	}
	if st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 200 {
		t.Fatalf("status %d after client errors, want 200", st)
	}
}

// retryProxy runs a round-robin pool of bad (first) and good with the given
// route retry block.
func retryProxy(t *testing.T, bad, good *ctlBackend, retry string) (*Proxy, string) {
	t.Helper()
	return startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}, {address: %q}]}]
routes: [{name: all, pool: app, retry: %s}]
`, bad.addr, good.addr, retry), Options{})
}

// TestRetryIdempotentOnly: a GET that meets a 503 is sent to the other
// backend; a POST is not (unless the route allows it or it carries an
// Idempotency-Key).
func TestRetryIdempotentOnly(t *testing.T) {
	bad, good := newCtlBackend(t, "bad"), newCtlBackend(t, "good")
	bad.mode.Store(mode503)
	_, base := retryProxy(t, bad, good, `{attempts: 2, statuses: [503], budget: {floor: 1000}}`)
	for i := range 10 {
		if st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 200 {
			t.Fatalf("GET %d: status %d, want 200 after a retry", i, st)
		}
	}
	if bad.count("GET") == 0 {
		t.Fatal("the failing backend got no GET: the test proves nothing")
	}
	failed := 0
	for range 10 {
		if st, _, _ := do(t, mustReq(t, "POST", base+"/", strings.NewReader("x"))); st == 503 {
			failed++
		}
	}
	if failed != bad.count("POST") || failed == 0 || good.count("POST") != 10-failed {
		t.Fatalf("POST: %d answered 503, bad got %d, good got %d: a POST was retried", failed, bad.count("POST"), good.count("POST"))
	}
	for i := range 6 {
		req := mustReq(t, "POST", base+"/", strings.NewReader("x"))
		req.Header.Set("Idempotency-Key", fmt.Sprint("k", i))
		if st, _, _ := do(t, req); st != 200 {
			t.Fatalf("POST with Idempotency-Key: %d, want 200 after a retry", st)
		}
	}
}

// TestRetryReplaysBody is the trap of Go proxies: a retried POST whose body
// the first attempt consumed must reach the second backend whole, with a
// known length and with chunked encoding.
func TestRetryReplaysBody(t *testing.T) {
	for _, mode := range []int32{mode503, modeReset} {
		bad, good := newCtlBackend(t, "bad"), newCtlBackend(t, "good")
		bad.mode.Store(mode)
		_, base := retryProxy(t, bad, good, `{attempts: 2, on: [reset], statuses: [503], non_idempotent: true, budget: {floor: 1000}}`)
		payload := bytes.Repeat([]byte("0123456789abcdef"), 4000) // 64000 bytes
		sum := sha256.Sum256(payload)
		want := hex.EncodeToString(sum[:])
		for i := range 6 {
			var body io.Reader = bytes.NewReader(payload)
			if i%2 == 1 {
				body = io.MultiReader(bytes.NewReader(payload)) // unknown length: chunked
			}
			st, h, resp := do(t, mustReq(t, "POST", base+"/", body))
			if st != 200 || h.Get("X-Body-Sha256") != want {
				t.Fatalf("mode %d request %d: %d, body hash %s, want 200 and the whole body (%s): %s", mode, i, st, h.Get("X-Body-Sha256"), want, resp)
			}
		}
		if bad.count("POST") == 0 {
			t.Fatal("no POST met the failing backend: the test proves nothing")
		}
	}
}

// TestNoRetryOfBigOrStreamedBody: a body over body_limit is streamed once
// and the request is not retried.
func TestNoRetryOfBigOrStreamedBody(t *testing.T) {
	bad, good := newCtlBackend(t, "bad"), newCtlBackend(t, "good")
	bad.mode.Store(mode503)
	_, base := retryProxy(t, bad, good, `{attempts: 2, statuses: [503], non_idempotent: true, body_limit: 1024, budget: {floor: 1000}}`)
	payload := bytes.Repeat([]byte("x"), 4096)
	failed := 0
	for i := range 10 {
		var body io.Reader = bytes.NewReader(payload)
		if i%2 == 1 {
			body = io.MultiReader(bytes.NewReader(payload))
		}
		st, _, _ := do(t, mustReq(t, "PUT", base+"/", body))
		if st == 503 {
			failed++
		}
	}
	if failed == 0 || failed != bad.count("PUT") || good.count("PUT") != 10-failed {
		t.Fatalf("%d answered 503, bad got %d, good got %d: a body over the limit was retried", failed, bad.count("PUT"), good.count("PUT"))
	}
}

// TestRetryBudget: with a budget of 10% of requests and no floor, at most
// one request in ten is retried, and the rest of the failures reach the
// client; the exhaustion is counted.
func TestRetryBudget(t *testing.T) {
	bad, good := newCtlBackend(t, "bad"), newCtlBackend(t, "good")
	bad.mode.Store(mode503)
	p, base := retryProxy(t, bad, good, `{attempts: 2, statuses: [503], budget: {ratio: 0.1, floor: -1, window: 1m}}`)
	failed := 0
	const n = 100
	for range n {
		if st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); st == 503 {
			failed++
		}
	}
	retried := bad.count("GET") - failed
	if retried > n/10 || retried < n/10-2 {
		t.Fatalf("%d requests retried of %d, budget 10%%: want about %d, never more", retried, n, n/10)
	}
	if rec := httptestRecorder(p); !strings.Contains(rec, `xlb_proxy_retry_budget_exhausted_total{route="all"} `+fmt.Sprint(failed)) {
		t.Fatalf("budget exhausted metric, want %d:\n%s", failed, grepLines(rec, "retry"))
	}
}

// TestFallbacks: with no usable backend the route answers from the last
// good response (GET, HEAD), another pool, or a fixed response.
func TestFallbacks(t *testing.T) {
	be, spare := newCtlBackend(t, "main"), newCtlBackend(t, "spare")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - {name: app, backends: [{address: %q}]}
  - {name: spare, backends: [{address: %q}]}
routes:
  - name: cached
    match: {path: {prefix: /cached}}
    pool: app
    timeout: 2s
    fallback: {last_good: {max_entries: 10}, respond: {status: 503, body: "down for maintenance"}}
  - name: other
    pool: app
    fallback: {pool: spare}
`, be.addr, spare.addr), Options{})
	st, _, first := do(t, mustReq(t, "GET", base+"/cached/a", nil))
	if st != 200 {
		t.Fatalf("status %d with the backend up", st)
	}
	if err := p.Drain("app", be.addr); err != nil {
		t.Fatal(err)
	}
	st, h, body := do(t, mustReq(t, "GET", base+"/cached/a", nil))
	if st != 200 || body != first || h.Get("Xlb-Fallback") != "last_good" || h.Get("Age") == "" {
		t.Fatalf("last good: %d %q %v, want 200, the first answer and Xlb-Fallback: last_good", st, body, h)
	}
	st, h, body = do(t, mustReq(t, "HEAD", base+"/cached/a", nil))
	if st != 200 || body != "" || h.Get("Xlb-Fallback") != "last_good" {
		t.Fatalf("HEAD last good: %d %q %v", st, body, h)
	}
	st, h, body = do(t, mustReq(t, "GET", base+"/cached/never-seen", nil))
	if st != 503 || body != "down for maintenance" || h.Get("Xlb-Fallback") != "respond" {
		t.Fatalf("uncached: %d %q %v, want the fixed response", st, body, h)
	}
	st, _, body = do(t, mustReq(t, "POST", base+"/cached/a", strings.NewReader("x")))
	if st != 503 || body != "down for maintenance" {
		t.Fatalf("POST: %d %q, want the fixed response (no last good for POST)", st, body)
	}
	st, h, body = do(t, mustReq(t, "GET", base+"/x", nil))
	if st != 200 || h.Get("X-Backend") != "spare" || h.Get("Xlb-Fallback") != "pool" {
		t.Fatalf("fallback pool: %d %v %q", st, h, body)
	}
	if be.count("GET") != 1 {
		t.Fatalf("the drained backend got %d GETs, want only the first", be.count("GET"))
	}
}

// TestShedding: a pool's concurrency limit answers the requests over it at
// once with 503 and Retry-After.
func TestShedding(t *testing.T) {
	be := newCtlBackend(t, "a")
	be.mode.Store(modeHold)
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}]
    adaptive_concurrency: {initial_limit: 2, min_limit: 2, max_limit: 2, retry_after: 3s}
routes: [{name: all, pool: app}]
`, be.addr), Options{})
	done := make(chan int, 2)
	for range 2 {
		go func() { st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); done <- st }()
	}
	testutil.Eventually(t, 10*time.Second, "two requests held", func() bool { return be.hits.Load() == 2 })
	for range 3 {
		st, h, _ := do(t, mustReq(t, "GET", base+"/", nil))
		if st != 503 || h.Get("Retry-After") != "3" {
			t.Fatalf("over the limit: %d Retry-After %q, want 503 and 3", st, h.Get("Retry-After"))
		}
	}
	be.unhold()
	for range 2 {
		if st := <-done; st != 200 {
			t.Fatalf("held request: %d", st)
		}
	}
	if be.hits.Load() != 2 {
		t.Fatalf("backend got %d requests, want 2", be.hits.Load())
	}
}

// TestSlowStartThroughProxy undrains a backend of a weighted round-robin
// pool with a 3 s slow start and checks its share of the requests in each
// second against the ramp (without slow start it would be half at once).
func TestSlowStartThroughProxy(t *testing.T) {
	a, b := newCtlBackend(t, "a"), newCtlBackend(t, "b")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    algorithm: weighted_round_robin
    backends: [{address: %q}, {address: %q}]
    slow_start: {window: 3s, min_share: 0.1}
routes: [{name: all, pool: app}]
`, a.addr, b.addr), Options{})
	if err := p.Drain("app", b.addr); err != nil {
		t.Fatal(err)
	}
	if err := p.Undrain("app", b.addr); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var total, toB [3]int
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				resp, err := tr.RoundTrip(mustReq(t, "GET", base+"/", nil))
				el := time.Since(start)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				k := int(el / time.Second)
				if k >= 3 {
					return
				}
				mu.Lock()
				total[k]++
				if resp.Header.Get("X-Backend") == "b" {
					toB[k]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var share [3]float64
	for k := range 3 {
		if total[k] < 50 {
			t.Skipf("only %d requests in second %d: machine too busy to measure shares", total[k], k)
		}
		share[k] = float64(toB[k]) / float64(total[k])
		// The ramp's mean share over second k: f/(1+f), f from 0.1 to 1.
		var want float64
		for i := range 100 {
			f := 0.1 + 0.9*(float64(k)+float64(i)/100)/3
			want += f / (1 + f) / 100
		}
		if d := share[k] - want; d > 0.1 || d < -0.1 {
			t.Errorf("second %d: b took %.2f of %d requests, ramp says %.2f", k, share[k], total[k], want)
		}
	}
	if !(share[0] < share[1] && share[1] < share[2]) {
		t.Errorf("b's share %.2f does not grow over the ramp", share)
	}
}

func httptestRecorder(p *Proxy) string {
	rec := &strings.Builder{}
	w := &recorderWriter{h: http.Header{}, b: rec}
	p.Metrics().ServeHTTP(w, mustReqNoT("GET", "/metrics"))
	return rec.String()
}

type recorderWriter struct {
	h http.Header
	b *strings.Builder
}

func (r *recorderWriter) Header() http.Header         { return r.h }
func (r *recorderWriter) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *recorderWriter) WriteHeader(int)             {}

func mustReqNoT(method, url string) *http.Request {
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return r
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRetryPerTryTimeout: an attempt at a backend that never answers ends at
// the per-try timeout and the request goes to the other backend, well within
// the route's timeout.
func TestRetryPerTryTimeout(t *testing.T) {
	hang := hangBackend(t)
	good := newCtlBackend(t, "good")
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, backends: [{address: %q}, {address: %q}]}]
routes: [{name: all, pool: app, timeout: 10s, retry: {attempts: 2, on: [per_try_timeout], per_try_timeout: 300ms, budget: {floor: 1000}}}]
`, hang, good.addr), Options{})
	for i := range 10 {
		if st, h, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 200 || h.Get("X-Backend") != "good" {
			t.Fatalf("request %d: %d from %q, want 200 from good after the hanging attempt timed out", i, st, h.Get("X-Backend"))
		}
	}
	if good.hits.Load() != 10 {
		t.Fatalf("good got %d requests, want 10", good.hits.Load())
	}
}

// TestFailedAttemptsCounted: an attempt that gets no response counts as a
// failure of its backend, retried or not.
func TestFailedAttemptsCounted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // connections to it are refused
	good := newCtlBackend(t, "good")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - {name: dead, backends: [{address: %q}]}
  - {name: mixed, backends: [{address: %q}, {address: %q}]}
routes:
  - {name: dead, match: {path: {prefix: /dead}}, pool: dead}
  - {name: mixed, pool: mixed, retry: {attempts: 2, budget: {floor: 1000}}}
`, dead, dead, good.addr), Options{})
	if st, _, _ := do(t, mustReq(t, "GET", base+"/dead", nil)); st != 502 {
		t.Fatalf("status %d from a refused backend, want 502", st)
	}
	for range 4 {
		if st, _, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 200 {
			t.Fatalf("status %d, want 200 after a retry", st)
		}
	}
	for _, b := range p.Backends() {
		want := uint64(0)
		switch {
		case b.Pool == "dead":
			want = 1
		case b.Address == dead:
			want = 4 // round robin: the retry's pick moves the turn on, so every request starts there
		}
		if b.Failures != want {
			t.Errorf("%s %s: %d failures, want %d", b.Pool, b.Address, b.Failures, want)
		}
	}
}

// TestPoolBreakerFallback: when the pool's own breaker opens, requests get
// the route's fallback without reaching any backend.
func TestPoolBreakerFallback(t *testing.T) {
	a, b := newCtlBackend(t, "a"), newCtlBackend(t, "b")
	a.mode.Store(mode503)
	b.mode.Store(mode503)
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}, {address: %q}]
    pool_breaker: {consecutive_failures: 4, open_base: 1m}
routes: [{name: all, pool: app, fallback: {respond: {status: 503, body: "pool down"}}}]
`, a.addr, b.addr), Options{})
	for range 4 {
		if st, h, _ := do(t, mustReq(t, "GET", base+"/", nil)); st != 503 || h.Get("Xlb-Fallback") != "" {
			t.Fatalf("before the pool breaker opens: %d %v, want the backends' 503", st, h)
		}
	}
	hits := a.hits.Load() + b.hits.Load()
	for range 5 {
		st, h, body := do(t, mustReq(t, "GET", base+"/", nil))
		if st != 503 || body != "pool down" || h.Get("Xlb-Fallback") != "respond" {
			t.Fatalf("pool breaker open: %d %q %v, want the fallback", st, body, h)
		}
	}
	if got := a.hits.Load() + b.hits.Load(); got != hits {
		t.Fatalf("%d requests reached backends behind an open pool breaker", got-hits)
	}
}

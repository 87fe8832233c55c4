package proxy

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// hangBackend accepts connections and never answers; closed at cleanup.
func hangBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, bufio.NewReader(c)) })
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// TestChaos runs a round-robin pool of a healthy backend, one that fails
// half of its requests and one that hangs, with breakers, retries and a
// budget on, then with all of them off. The bounds are on counts, not time:
// with everything on at most 5% of the requests fail and the healthy
// backend gets at most 1.25 requests per client request (no retry storm);
// with everything off about half fail.
func TestChaos(t *testing.T) {
	var healthyHits atomic.Int64
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		healthyHits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(healthy.Close)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rand.IntN(2) == 0 {
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(flaky.Close)
	hang := hangBackend(t)
	addrs := fmt.Sprintf("[{address: %q}, {address: %q}, {address: %q}]",
		strings.TrimPrefix(healthy.URL, "http://"), strings.TrimPrefix(flaky.URL, "http://"), hang)

	for _, tc := range []struct {
		name, pool, route string
		timeout           string
		check             func(errors, n int, healthyX float64) bool
		want              string
	}{
		{"all on",
			`breaker: {consecutive_failures: 3, failure_ratio: 0.3, min_requests: 10, open_base: 10s}`,
			`retry: {attempts: 3, on: [connect_failure, reset, per_try_timeout], statuses: [503], per_try_timeout: 1s, budget: {ratio: 0.2, floor: 5}}`,
			// Generous, so that a loaded machine does not time out the
			// healthy backend and trip its breaker.
			"3s",
			func(errors, n int, hx float64) bool { return errors <= n/20 && hx <= 1.25 },
			"at most 5% errors, healthy at most 1.25x"},
		{"all off", ``, ``, "300ms",
			func(errors, n int, hx float64) bool { return errors >= n/3 },
			"at least a third failing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			healthyHits.Store(0)
			_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: %s
    %s
routes:
  - name: all
    pool: app
    timeout: %s
    %s
`, addrs, tc.pool, tc.timeout, tc.route), Options{})
			const n, workers = 300, 10
			var next, failed atomic.Int64
			statuses := sync.Map{}
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= n {
						resp, err := http.Get(base + "/")
						code := 0
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							code = resp.StatusCode
						}
						if code != 200 {
							failed.Add(1)
						}
						c, _ := statuses.LoadOrStore(code, new(atomic.Int64))
						c.(*atomic.Int64).Add(1)
					}
				})
			}
			wg.Wait()
			var summary []string
			statuses.Range(func(k, v any) bool {
				summary = append(summary, fmt.Sprintf("%v:%d", k, v.(*atomic.Int64).Load()))
				return true
			})
			hx := float64(healthyHits.Load()) / n
			t.Logf("%s: %d of %d failed (%v), healthy got %.2f per request", tc.name, failed.Load(), n, summary, hx)
			if !tc.check(int(failed.Load()), n, hx) {
				t.Errorf("%s: %d of %d failed, healthy %.2fx: want %s", tc.name, failed.Load(), n, hx, tc.want)
			}
		})
	}
}

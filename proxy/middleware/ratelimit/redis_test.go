package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/xlb-project/xlb/internal/testutil"
)

// proxyLimiter is one proxy's view of a shared limit: its own Set (its own
// leases and local state), as a separate process would have.
func proxyLimiter(t *testing.T, src string) (*Limiter, *Metrics) {
	t.Helper()
	c, err := parseYAML(t, src)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	m := NewMetrics()
	s := NewSet(nil, m)
	t.Cleanup(s.Close)
	return s.Limiter(c, Options{Route: "r"}), m
}

func decide(l *Limiter, remote string) int {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = remote
	if l.admit(w, r) {
		return http.StatusOK
	}
	return w.Code
}

func evalCalls(t *testing.T, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	n := 0
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if strings.HasPrefix(line, cmd) {
				var c int
				fmt.Sscanf(strings.TrimPrefix(line, cmd), "calls=%d", &c)
				n += c
			}
		}
	}
	return n
}

// TestRedisSharedLimit: two proxies hammer one key; what both admit stays
// within rate × time + burst, and neither starves.
func TestRedisSharedLimit(t *testing.T) {
	rd := testutil.StartRedis(t)
	// fail_closed and a long timeout: on a loaded machine a slow answer must
	// not turn into admissions.
	cfg := fmt.Sprintf("rate: 200\nburst: 50\nredis: {address: %q, batch: 10, timeout: 2s, on_error: fail_closed}\n", rd.Addr)
	a, _ := proxyLimiter(t, cfg)
	b, _ := proxyLimiter(t, cfg)
	var admitted atomic.Int64
	start := time.Now()
	deadline := start.Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range 8 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if decide(l, "198.51.100.1:1") == http.StatusOK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	bound := int64(200*elapsed.Seconds()) + 50
	got := admitted.Load()
	t.Logf("admitted %d in %v by two proxies (bound %d)", got, elapsed, bound)
	if got > bound {
		t.Errorf("admitted %d, over rate × time + burst = %d", got, bound)
	}
	if got < bound/2 {
		t.Errorf("admitted %d, under half the limit (%d): leases lost too much", got, bound)
	}
}

// TestRedisBatchSavesRoundTrips: a key far under its limit costs one round
// trip per batch, not per request.
func TestRedisBatchSavesRoundTrips(t *testing.T) {
	rd := testutil.StartRedis(t)
	l, _ := proxyLimiter(t, fmt.Sprintf("rate: 1000\nper: 1s\nburst: 1000\nredis: {address: %q, batch: 20, timeout: 2s}\n", rd.Addr))
	before := evalCalls(t, rd.Addr)
	for i := range 200 {
		if c := decide(l, "198.51.100.1:1"); c != http.StatusOK {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	calls := evalCalls(t, rd.Addr) - before
	t.Logf("200 requests, %d script calls", calls)
	if calls > 12 {
		t.Errorf("%d round trips for 200 requests with batch 20, want about 10", calls)
	}
	// A limited key is answered locally until Redis said it could retry.
	l2, _ := proxyLimiter(t, fmt.Sprintf("rate: 1\nper: 1h\nredis: {address: %q}\n", rd.Addr))
	decide(l2, "198.51.100.2:1")
	before = evalCalls(t, rd.Addr)
	for range 50 {
		if c := decide(l2, "198.51.100.2:1"); c != http.StatusTooManyRequests {
			t.Fatalf("over the limit: %d", c)
		}
	}
	if calls := evalCalls(t, rd.Addr) - before; calls > 1 {
		t.Errorf("%d round trips for 50 refused requests, want at most 1", calls)
	}
}

func TestRedisDownAndBack(t *testing.T) {
	rd := testutil.StartRedis(t)
	mk := func(onError string) (*Limiter, *Metrics) {
		return proxyLimiter(t, fmt.Sprintf("rate: 1\nper: 1h\nredis: {address: %q, on_error: %s, timeout: 2s, backoff: 50ms}\n", rd.Addr, onError))
	}
	open, mOpen := mk("fail_open")
	closed, _ := mk("fail_closed")
	local, _ := mk("local")
	for _, l := range []*Limiter{open, closed, local} {
		decide(l, "198.51.100.1:1")
		if c := decide(l, "198.51.100.1:1"); c != http.StatusTooManyRequests {
			t.Fatalf("%s before the outage: %d, want 429", l.cfg.Redis.OnError, c)
		}
	}
	rd.Stop()
	// New clients (no cached refusal): the configured behaviour applies.
	if c := decide(open, "198.51.100.2:1"); c != http.StatusOK {
		t.Errorf("fail_open with redis down: %d, want 200", c)
	}
	if c := decide(open, "198.51.100.2:1"); c != http.StatusOK {
		t.Errorf("fail_open with redis down, second request: %d, want 200", c)
	}
	if n := decisionCount(mOpen, "redis_failed_open"); n != 2 {
		t.Errorf("redis_failed_open %v, want 2", n)
	}
	if c := decide(closed, "198.51.100.2:1"); c != http.StatusServiceUnavailable {
		t.Errorf("fail_closed with redis down: %d, want 503", c)
	}
	if c := decide(local, "198.51.100.2:1"); c != http.StatusOK {
		t.Errorf("local with redis down, first request: %d, want 200", c)
	}
	if c := decide(local, "198.51.100.2:1"); c != http.StatusTooManyRequests {
		t.Errorf("local with redis down, second request: %d, want 429 from the local bucket", c)
	}
	rd.Start() // empty: no persistence
	testutil.Eventually(t, 5*time.Second, "fail_closed limiter to use redis again", func() bool {
		return decide(closed, "198.51.100.3:1") == http.StatusOK
	})
	if c := decide(closed, "198.51.100.3:1"); c != http.StatusTooManyRequests {
		t.Errorf("after redis came back: %d, want 429 from the shared bucket", c)
	}
}

// TestRedisSlowTimesOut: a server that stops answering costs at most the
// timeout, then the backoff answers at once.
func TestRedisSlowTimesOut(t *testing.T) {
	rd := testutil.StartRedis(t)
	l, m := proxyLimiter(t, fmt.Sprintf("rate: 1\nper: 1h\nredis: {address: %q, timeout: 50ms, backoff: 10s}\n", rd.Addr))
	decide(l, "198.51.100.1:1")
	rd.Pause()
	defer rd.Resume()
	done := make(chan int, 20)
	go func() {
		for i := range 20 {
			done <- decide(l, fmt.Sprintf("198.51.100.%d:1", 10+i))
		}
	}()
	for range 20 {
		select {
		case c := <-done:
			if c != http.StatusOK {
				t.Errorf("fail_open while redis hangs: %d", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("decisions hang while redis does not answer")
		}
	}
	if n := redisErrorCount(m); n < 1 {
		t.Errorf("redis errors not counted")
	}
}

func decisionCount(m *Metrics, result string) float64 {
	return promtest.ToFloat64(m.decisions.WithLabelValues("r", "default", result))
}

func redisErrorCount(m *Metrics) float64 {
	return promtest.ToFloat64(m.redisErrors.WithLabelValues("r", "default"))
}

package proxy

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAlgorithmsThroughProxy runs each algorithm against a fast and a slow
// backend through the proxy and checks the distribution it must produce.
func TestAlgorithmsThroughProxy(t *testing.T) {
	_, fast := echoBackend(t, "fast")
	slowSrv, slow := echoBackend(t, "slow")
	slowHandler := slowSrv.Config.Handler
	// The slow backend answers a request only once every client is either
	// waiting for it too or finished: slower than the fast one however
	// busy the machine. least_time measures time, so for it the slow
	// backend also takes a latency far above any scheduling delay (that is
	// the property under test, not a wait for something).
	var gate atomic.Pointer[slowGate]
	var latency atomic.Int64
	slowSrv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gate.Load().wait()
		time.Sleep(time.Duration(latency.Load()))
		slowHandler.ServeHTTP(w, r)
	})
	tests := []struct {
		alg        string
		extra      string
		concurrent int
		check      func(counts map[string]int) bool
		want       string
	}{
		{"round_robin", "", 1, func(c map[string]int) bool { return c["fast"] == 20 && c["slow"] == 20 }, "20/20"},
		{"random", "", 1, func(c map[string]int) bool { return c["fast"] > 0 && c["slow"] > 0 }, "both used"},
		{"least_time", "", 1, func(c map[string]int) bool { return c["fast"] > 3*c["slow"] }, "fast > 3× slow"},
		{"least_conn", "", 8, func(c map[string]int) bool { return c["fast"] > 2*c["slow"] }, "fast > 2× slow"},
		{"p2c", "", 8, func(c map[string]int) bool { return c["fast"] > 2*c["slow"] }, "fast > 2× slow"},
		{"consistent_hash", `hash_key: "header:X-User"`, 1, func(c map[string]int) bool { return c["fast"] == 40 || c["slow"] == 40 }, "one user, one backend"},
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools: [{name: app, algorithm: %s, %s backends: [{address: %q}, {address: %q}]}]
routes: [{name: all, pool: app}]
`, tc.alg, commaIf(tc.extra), fast, slow), Options{})
			gate.Store(newSlowGate(tc.concurrent))
			latency.Store(0)
			if tc.alg == "least_time" {
				latency.Store(int64(100 * time.Millisecond))
			}
			var mu sync.Mutex
			counts := map[string]int{}
			var wg sync.WaitGroup
			per := 40 / tc.concurrent
			for w := 0; w < tc.concurrent; w++ {
				wg.Go(func() {
					defer gate.Load().finish()
					for i := 0; i < per; i++ {
						req := mustReq(t, "GET", base+"/", nil)
						req.Header.Set("X-User", "alice")
						_, e := getEcho(t, nil, req)
						mu.Lock()
						counts[e.Name]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if !tc.check(counts) {
				t.Errorf("%s: distribution %v, want %s", tc.alg, counts, tc.want)
			}
		})
	}
}

func commaIf(s string) string {
	if s == "" {
		return ""
	}
	return s + ","
}

// slowGate holds the requests of a slow backend until every one of the
// clients is either waiting on the gate or finished, then lets all of the
// waiting ones go.
type slowGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	clients int
	waiting int
	done    int
	round   int // counts releases
}

func newSlowGate(clients int) *slowGate {
	g := &slowGate{clients: clients}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *slowGate) wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	round := g.round
	g.waiting++
	g.releaseIfAllBlocked()
	for round == g.round {
		g.cond.Wait()
	}
}

func (g *slowGate) finish() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done++
	g.releaseIfAllBlocked()
}

func (g *slowGate) releaseIfAllBlocked() {
	if g.waiting > 0 && g.waiting+g.done >= g.clients {
		g.waiting = 0
		g.round++
		g.cond.Broadcast()
	}
}

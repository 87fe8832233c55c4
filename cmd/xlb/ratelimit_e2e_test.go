package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
	"github.com/xlb-project/xlb/proxy"
	proxyconfig "github.com/xlb-project/xlb/proxy/config"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProxyProcess runs `xlb proxy --config` with cfg and returns its
// listener and metrics addresses once it answers.
func startProxyProcess(t *testing.T, bin, cfg string) (listen, metrics string) {
	t.Helper()
	listen, metrics = freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	cfg = strings.NewReplacer("@LISTEN@", listen, "@METRICS@", metrics, "@SOCKET@", filepath.Join(dir, "admin.sock")).Replace(cfg)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "proxy", "--config", path, "--log-level", "warn")
	logf, _ := os.Create(filepath.Join(dir, "proxy.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "proxy.log"))
			t.Logf("proxy %s log:\n%s", listen, b)
		}
	})
	testutil.Eventually(t, 20*time.Second, "proxy on "+listen+" to answer", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "proxy.log"))
			t.Fatalf("proxy exited: %s", b)
		default:
		}
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return listen, metrics
}

func metricValue(t *testing.T, metrics, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix) {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}

// hammer sends requests through every proxy from workers goroutines each
// until stop is closed, counting answers by status.
type tally struct{ ok, limited, unavailable, other atomic.Int64 }

func hammer(proxies []string, workers int, stop chan struct{}, c *tally) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range workers * len(proxies) {
		addr := proxies[i%len(proxies)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					c.other.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					c.ok.Add(1)
				case 429:
					c.limited.Add(1)
				case 503:
					c.unavailable.Add(1)
				default:
					c.other.Add(1)
				}
			}
		}()
	}
	return &wg
}

const sharedLimitConfig = `
listeners: [{name: web, address: "@LISTEN@"}]
admin: {socket: "@SOCKET@", metrics_address: "@METRICS@"}
pools: [{name: app, backends: [{address: "%s"}]}]
routes:
  - name: all
    pool: app
    middleware:
      - kind: ratelimit
        config:
          name: shared
          rate: %d
          burst: %d
          redis: {address: "%s", batch: 5, on_error: fail_closed, timeout: 1s, backoff: 100ms}
`

// TestRateLimitSharedByTwoProxyProcesses: two `xlb proxy` processes share
// one limit through a real redis-server. All requests come from 127.0.0.1,
// one key. What both admit stays within rate × time + burst; while Redis is
// down they refuse (fail_closed, 503); after it restarts (empty: one more
// burst) they limit together again.
func TestRateLimitSharedByTwoProxyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds xlb and runs two proxy processes")
	}
	rd := testutil.StartRedis(t)
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(beLn)
	t.Cleanup(func() { be.Close() })

	const rate, burst = 100, 20
	bin := buildXLB(t)
	cfg := fmt.Sprintf(sharedLimitConfig, beLn.Addr(), rate, burst, rd.Addr)
	p1, m1 := startProxyProcess(t, bin, cfg)
	p2, m2 := startProxyProcess(t, bin, cfg)

	var c tally
	stop := make(chan struct{})
	start := time.Now()
	wg := hammer([]string{p1, p2}, 4, stop, &c)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wg.Wait()
		}
	}()
	testutil.Eventually(t, 10*time.Second, "requests limited with 429", func() bool { return c.limited.Load() > 100 })

	// Redis down under load: both proxies refuse at once.
	rd.Stop()
	testutil.Eventually(t, 10*time.Second, "503s while redis is down", func() bool { return c.unavailable.Load() > 50 })
	rd.Start()
	okAtRestart, limitedAtRestart := c.ok.Load(), c.limited.Load()
	testutil.Eventually(t, 10*time.Second, "requests admitted again after redis restarted", func() bool {
		return c.ok.Load() > okAtRestart
	})
	testutil.Eventually(t, 10*time.Second, "requests limited again after redis restarted", func() bool {
		return c.limited.Load() > limitedAtRestart+100
	})
	// Keep the load on for at least 3 s in all, so that the bound is
	// measured over a time long against one burst.
	<-time.After(time.Until(start.Add(3 * time.Second)))
	close(stop)
	wg.Wait()
	stopped = true
	elapsed := time.Since(start)

	ok := c.ok.Load()
	bound := int64(rate*elapsed.Seconds()) + 2*burst // Redis lost its state once: one more burst
	t.Logf("%v: admitted %d (bound %d), 429 %d, 503 %d, other %d", elapsed.Round(time.Millisecond), ok, bound, c.limited.Load(), c.unavailable.Load(), c.other.Load())
	if ok > bound {
		t.Errorf("two proxies admitted %d, over rate × time + 2 × burst = %d", ok, bound)
	}
	if c.other.Load() > 0 {
		t.Errorf("%d answers neither 200, 429 nor 503", c.other.Load())
	}
	errs := metricValue(t, m1, "xlb_proxy_ratelimit_redis_errors_total") + metricValue(t, m2, "xlb_proxy_ratelimit_redis_errors_total")
	closed := metricValue(t, m1, `xlb_proxy_ratelimit_decisions_total{limit="shared",result="redis_failed_closed"`) +
		metricValue(t, m2, `xlb_proxy_ratelimit_decisions_total{limit="shared",result="redis_failed_closed"`)
	if errs == 0 || closed == 0 {
		t.Errorf("redis errors %v, redis_failed_closed %v in the proxies' metrics: want both counted", errs, closed)
	}
}

// TestProxyDocsExamples builds a proxy, with the middlewares xlb
// registers, from every proxy config example of docs/proxy.md, so that
// the rate-limit configs in them are checked too (parsing the proxy config
// alone leaves a middleware's config unread).
func TestProxyDocsExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		text, _, _ := strings.Cut(block, "```")
		if !strings.HasPrefix(text, "# xlb proxy config\n") {
			continue
		}
		n++
		cfg, err := proxyconfig.Parse([]byte(text))
		if err != nil {
			t.Errorf("example %d does not parse: %v\n%s", n, err, text)
			continue
		}
		opts, stop := proxyOptions(nil, "")
		if _, err := proxy.New(cfg, opts); err != nil {
			t.Errorf("example %d does not load: %v\n%s", n, err, text)
		}
		stop()
	}
	if n < 4 {
		t.Errorf("%d proxy config examples found, want at least 4", n)
	}
}

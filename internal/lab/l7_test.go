package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlb-project/xlb/internal/testutil"
)

// l7Answer is what one HTTP exchange through the VIP returned.
type l7Answer struct {
	status  int
	proxy   string // ProxyHeader: the backend host whose proxy forwarded it
	app     string // X-Backend: the echo server that answered
	cookies []*http.Cookie
}

func readL7Answer(r *bufio.Reader) (l7Answer, error) {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return l7Answer{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return l7Answer{status: resp.StatusCode, proxy: resp.Header.Get(ProxyHeader), app: resp.Header.Get("X-Backend"), cookies: resp.Cookies()}, nil
}

func writeL7Request(c net.Conn, path, cookie string, keepAlive bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: lab\r\n", path)
	if cookie != "" {
		fmt.Fprintf(&b, "Cookie: %s\r\n", cookie)
	}
	if !keepAlive {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c, b.String())
	return err
}

// l7Get sends one request on a new connection from c's source address
// through the L7 VIP, so every call is a new flow for the L4 tier.
func l7Get(c Client, path, cookie string) (l7Answer, error) {
	conn, err := c.Dial("tcp", ProxyVIP())
	if err != nil {
		return l7Answer{}, err
	}
	defer conn.Close()
	if err := writeL7Request(conn, path, cookie, false); err != nil {
		return l7Answer{}, err
	}
	return readL7Answer(bufio.NewReader(conn))
}

// TestL4InFrontOfL7: the two tiers together. One balancer (xdp_lb, DSR)
// spreads connections to 203.0.113.10:8080 over three backend hosts, each
// running "xlb proxy" on the VIP in front of the echo servers of all
// three; the proxies share a sticky key and one Redis.
//
//   - Per-client limit across proxies: client A (its own source address)
//     hammers /limited over new connections, which land on every proxy;
//     what A gets admitted in total stays within rate × time + burst (three
//     unshared limits would admit about three times that), while client B
//     is served all along. This works because direct server return shows
//     the proxies A's and B's real addresses.
//   - Stickiness across proxies: with its cookie, client C's new
//     connections land on several proxies and all reach the same app
//     server (without the cookie they reach several).
//   - Draining a proxy host in the L4 tier: new connections avoid it, and a
//     keep-alive connection opened before keeps being served by it.
func TestL4InFrontOfL7(t *testing.T) {
	const rate, burst = 20, 10
	l := e2eLab(t, Config{Backends: 3, L7: &L7Config{Rate: rate, Burst: burst, Redis: true}}, DaemonConfig{L7: true})
	srcs, err := l.AddClientSources(4)
	if err != nil {
		t.Fatal(err)
	}
	client := func(i int) Client { return Client{Netns: l.Client.Netns, Source: srcs[i], Timeout: 3 * time.Second} }
	a, b, c, d := client(0), client(1), client(2), client(3)

	// Through the VIP at all, from every source.
	for i := range srcs {
		testutil.Eventually(t, 15*time.Second, fmt.Sprintf("GET / through %s from %s", ProxyVIP(), srcs[i]), func() bool {
			ans, err := l7Get(client(i), "/", "")
			return err == nil && ans.status == 200 && ans.proxy != ""
		})
	}

	t.Run("per-client limit shared by all proxies", func(t *testing.T) {
		var (
			mu             sync.Mutex
			okByProxy      = map[string]int{}
			limited, other int
			bServed        []int
		)
		const hammerFor = 3 * time.Second
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < hammerFor {
					ans, err := l7Get(a, LimitedPath, "")
					mu.Lock()
					switch {
					case err != nil:
						other++
					case ans.status == 200:
						okByProxy[ans.proxy]++
					case ans.status == 429:
						limited++
					default:
						other++
					}
					mu.Unlock()
				}
			}()
		}
		// B asks now and then, far under its own limit.
		tick := time.NewTicker(hammerFor / 6)
		for range 5 {
			<-tick.C
			ans, err := l7Get(b, LimitedPath, "")
			if err != nil {
				t.Errorf("client B: %v", err)
				continue
			}
			bServed = append(bServed, ans.status)
		}
		tick.Stop()
		wg.Wait()
		elapsed := time.Since(start)

		admitted := 0
		for _, n := range okByProxy {
			admitted += n
		}
		bound := int(float64(rate)*elapsed.Seconds()) + burst
		t.Logf("client A in %v: %d admitted %v (bound rate×time+burst = %d), %d limited, %d other; client B: %v",
			elapsed.Round(time.Millisecond), admitted, okByProxy, bound, limited, other, bServed)
		if admitted > bound {
			t.Errorf("client A was admitted %d times across the proxies, more than rate × time + burst = %d: the limit is not shared", admitted, bound)
		}
		if len(okByProxy) < 2 {
			t.Errorf("client A was admitted by proxies %v only; its connections should land on several", okByProxy)
		}
		if limited == 0 {
			t.Errorf("client A was never limited (%d admitted)", admitted)
		}
		if admitted < burst {
			t.Errorf("client A admitted %d times, less than its burst %d", admitted, burst)
		}
		for i, s := range bServed {
			if s != 200 {
				t.Errorf("client B request %d: status %d, want 200 (B has its own limit: the proxies must see its real address)", i, s)
			}
		}
	})

	t.Run("sticky cookie across proxies", func(t *testing.T) {
		first, err := l7Get(c, "/", "")
		if err != nil {
			t.Fatal(err)
		}
		var cookie string
		for _, ck := range first.cookies {
			if ck.Name == StickyCookie {
				cookie = ck.Name + "=" + ck.Value
			}
		}
		if cookie == "" || first.app == "" {
			t.Fatalf("first answer: app %q, cookies %v: want X-Backend and a %s cookie", first.app, first.cookies, StickyCookie)
		}
		proxies, apps, unstuckApps := map[string]int{}, map[string]int{}, map[string]int{}
		for range 30 {
			ans, err := l7Get(c, "/", cookie)
			if err != nil {
				t.Fatal(err)
			}
			proxies[ans.proxy]++
			apps[ans.app]++
			ans, err = l7Get(c, "/", "")
			if err != nil {
				t.Fatal(err)
			}
			unstuckApps[ans.app]++
		}
		t.Logf("with cookie for %s: proxies %v, apps %v; without cookie: apps %v", first.app, proxies, apps, unstuckApps)
		if len(proxies) < 2 {
			t.Errorf("30 new connections landed on proxies %v only; want several", proxies)
		}
		if len(apps) != 1 || apps[first.app] != 30 {
			t.Errorf("with the cookie for %s, answers came from %v: stickiness does not hold across proxies", first.app, apps)
		}
		if len(unstuckApps) < 2 {
			t.Errorf("without a cookie, answers came from %v only; want several (else the cookie proves nothing)", unstuckApps)
		}
	})

	t.Run("a stopped proxy leaves the VIP and comes back", func(t *testing.T) {
		victim := l.Backends[1]
		if err := l.StopProxy(victim.Name); err != nil {
			t.Fatal(err)
		}
		restarted := false
		defer func() {
			if !restarted { // for the subtests after this one
				if err := l.StartProxy(victim.Name); err == nil {
					_ = l.waitTCP(context.Background(), victim.Netns, ProxyVIP(), proxyName(victim.Name))
				}
			}
		}()
		// The app server on the victim still answers: only a check of the
		// proxy itself sees it gone.
		// Health changes at once; the table follows after the daemon's
		// debounce, and usable_new turns false only once it is installed.
		testutil.Eventually(t, 15*time.Second, "lb1 to mark "+victim.Name+" unhealthy in "+proxyVIPKey+" and take it out of the table", func() bool {
			b := proxyBackend(l, victim)
			return b.Health == "unhealthy" && !b.UsableNew
		})
		served := map[string]int{}
		for round := range 8 {
			for i := range srcs {
				ans, err := l7Get(client(i), "/", "")
				if err != nil || ans.status != 200 {
					t.Fatalf("round %d, client %s, with %s's proxy stopped: status %d, err %v; want 200 from another proxy",
						round, srcs[i], victim.Name, ans.status, err)
				}
				served[ans.proxy]++
			}
		}
		if served[victim.Name] != 0 || len(served) < 2 {
			t.Errorf("new connections went to %v: want the remaining proxies only, and several", served)
		}
		if err := l.StartProxy(victim.Name); err != nil {
			t.Fatal(err)
		}
		restarted = true
		testutil.Eventually(t, 15*time.Second, "lb1 to mark "+victim.Name+" healthy again", func() bool {
			return proxyBackend(l, victim).Health == "healthy"
		})
		back := 0
		testutil.Eventually(t, 10*time.Second, "new connections to reach "+victim.Name+"'s proxy again", func() bool {
			for i := range srcs {
				if ans, err := l7Get(client(i), "/", ""); err == nil && ans.status == 200 && ans.proxy == victim.Name {
					back++
				}
			}
			return back > 0
		})
		t.Logf("%s's proxy stopped: marked down, %d new connections from %d clients served by %v; restarted: marked healthy, serving again",
			victim.Name, 8*len(srcs), len(srcs), served)
	})

	t.Run("drain a proxy host keeps its connections", func(t *testing.T) {
		conn, err := d.Dial("tcp", ProxyVIP())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		ask := func() l7Answer {
			t.Helper()
			if err := writeL7Request(conn, "/", "", true); err != nil {
				t.Fatalf("keep-alive request: %v", err)
			}
			ans, err := readL7Answer(r)
			if err != nil {
				t.Fatalf("keep-alive answer: %v", err)
			}
			return ans
		}
		held := ask().proxy
		var heldAddr netip.Addr
		for _, be := range l.Backends {
			if be.Name == held {
				heldAddr = be.IPv4
			}
		}
		if !heldAddr.IsValid() {
			t.Fatalf("answer from proxy %q: not a lab backend", held)
		}
		cli(t, l, "lb1", "backend", "drain", ProxyVIP().String()+"/tcp", heldAddr.String(), "--timeout", "60s")
		seen := map[string]int{}
		testutil.Eventually(t, 10*time.Second, "20 new connections in a row avoid the drained proxy "+held, func() bool {
			for range 20 {
				ans, err := l7Get(d, "/", "")
				if err != nil || ans.status != 200 || ans.proxy == held {
					return false
				}
				seen[ans.proxy]++
			}
			return true
		})
		for i := range 5 {
			ans := ask()
			if ans.status != 200 || ans.proxy != held {
				t.Fatalf("keep-alive request %d after the drain: status %d from proxy %q, want 200 from %s", i, ans.status, ans.proxy, held)
			}
		}
		names := make([]string, 0, len(seen))
		for n := range seen {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Logf("drained %s (%s): its keep-alive connection served 5 more requests; new connections went to %v", held, heldAddr, names)
	})
}

var proxyVIPKey = ProxyVIP().String() + "/tcp"

// proxyBackend is be's state in the L7 VIP as lb1's daemon reports
// it ("xlb backend list -o json"), the zero value when it cannot be read.
func proxyBackend(l *Lab, be Host) backendJSON {
	out, err := l.CLI(context.Background(), "lb1", "backend", "list", "-o", "json")
	if err != nil {
		return backendJSON{}
	}
	var bs []backendJSON
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		return backendJSON{}
	}
	for _, b := range bs {
		if b.VIP == proxyVIPKey && b.Address == be.IPv4.String() {
			return b
		}
	}
	return backendJSON{}
}

// The proxy config the lab writes for a backend host is one "xlb proxy
// --check-config" accepts, with and without Redis, and names every app
// server, the shared sticky key and the limit.
func TestProxyConfigChecks(t *testing.T) {
	topo, err := plan("xlbt-cfg-", 1, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildXLB(t)
	for _, redis := range []bool{false, true} {
		c := &L7Config{Rate: 7, Burst: 3}
		if err := c.setDefaults(); err != nil {
			t.Fatal(err)
		}
		c.Redis = redis // after setDefaults: no redis-server needed to check
		l := &Lab{Topology: topo, cfg: Config{StateDir: t.TempDir(), L7: c}}
		y := l.proxyYAML(topo.Backends[1])
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "proxy", "--check-config", path).CombinedOutput(); err != nil {
			t.Fatalf("redis %v: xlb proxy --check-config: %v: %s\n%s", redis, err, out, y)
		}
		for _, want := range []string{"198.51.100.11:80", "198.51.100.12:80", "198.51.100.13:80", c.StickyKey, "rate: 7", "burst: 3",
			"0.0.0.0:8080", "exact: " + ProxyHealthPath, "X-Proxy: be2"} {
			if !strings.Contains(y, want) {
				t.Errorf("redis %v: config lacks %q:\n%s", redis, want, y)
			}
		}
		if got := strings.Contains(y, l.RedisAddr().String()); got != redis {
			t.Errorf("redis %v: config names redis %s: %v:\n%s", redis, l.RedisAddr(), got, y)
		}
	}
}

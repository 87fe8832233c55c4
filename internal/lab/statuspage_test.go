package lab

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xlb-project/xlb/internal/testutil"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write docs/status-page.png from TestStatusPageInBrowser")

// TestStatusPageInBrowser opens the daemon's status page in headless
// Chromium inside the balancer's namespace: it shows the VIP and its
// backends, a backend turns "draining" within 3 s of `xlb backend drain`,
// and one whose server stopped turns "down" once the checks notice. Over
// HTTP nothing but GET and HEAD is accepted, and the refused requests
// change nothing.
func TestStatusPageInBrowser(t *testing.T) {
	const metrics = "127.0.0.1:9437" // inside lb1's namespace
	l := e2eLab(t, Config{Backends: 3}, DaemonConfig{MetricsAddr: metrics})
	lb, _ := l.Host("lb1")
	ctx := testutil.Browser(t, 3*time.Minute, lb.Netns.Path())

	stateOf := func(vip, backend string) string {
		sel := fmt.Sprintf(`tr.member[data-member=%q] .state`, vip+"|"+backend)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+metrics+"/status"), chromedp.WaitVisible(chromedp.CSS(`tr.member`))); err != nil {
		t.Fatal(err)
	}
	vipRow, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr.group[data-group=%q]`, vipTCP))))
	if err != nil {
		t.Fatalf("the page has no row for %s: %v", vipTCP, err)
	}
	if !strings.Contains(vipRow, vipTCP) || !strings.Contains(vipRow, "3/3") {
		t.Errorf("VIP row %q: want the VIP with 3/3 healthy", vipRow)
	}
	be1, be2 := addrOf(l, "be1"), addrOf(l, "be2")
	for _, be := range []string{be1, be2} {
		if s := stateOf(vipTCP, be); s != "up" {
			t.Errorf("%s shows %q before any change, want up", be, s)
		}
	}

	cli(t, l, "lb1", "backend", "drain", vipTCP, be1, "--timeout", "5m")
	testutil.Eventually(t, 3*time.Second, be1+` "draining" on the page within 3 s of xlb backend drain`, func() bool {
		return stateOf(vipTCP, be1) == "draining"
	})

	if err := l.StopServer("be2"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, be2+` "down" on the page once the checks notice`, func() bool {
		return stateOf(vipTCP, be2) == "down"
	})
	lastErr, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr.member[data-member=%q] td.err`, vipTCP+"|"+be2))))
	if err != nil || lastErr == "" {
		t.Errorf("no last error shown for %s (%v)", be2, err)
	}
	// Traffic through the VIP shows as packets on the page.
	c := Client{Netns: l.Client.Netns}
	for range 20 {
		if _, err := c.Hello(echoVIP); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the VIP's packets counted on the page", func() bool {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr.member[data-member=%q] td:nth-child(9)`, vipTCP+"|"+addrOf(l, "be3")))))
		return err == nil && s != "" && s != "0"
	})
	if *updateScreenshot {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../../docs/status-page.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Read-only: from inside the namespace, every other method is refused
	// on every path, and the state stays as it was.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(lb, netip.MustParseAddrPort(addr))
		},
	}}
	for _, path := range []string{"/", "/status", "/status.json", "/metrics"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, _ := http.NewRequest(method, "http://"+metrics+path, strings.NewReader(`{"vip":"`+vipTCP+`","address":"`+be1+`"}`))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %s, want 405", method, path, resp.Status)
			}
		}
	}
	resp, err := hc.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "xlb_vip_packets_total") {
		t.Error("GET /metrics no longer serves the Prometheus metrics")
	}
	for _, b := range listBackends(t, l, "lb1", vipTCP) {
		if b.Address == be1 && b.Admin != "draining" {
			t.Errorf("%s is %s after the refused requests, want still draining", be1, b.Admin)
		}
	}
}

// dialIn opens a TCP connection from inside a host's network namespace.
func dialIn(h Host, addr netip.AddrPort) (net.Conn, error) {
	var conn net.Conn
	err := h.Netns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	})
	return conn, err
}

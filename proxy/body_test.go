package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMalformedChunkedBodyIsTheClients: a request whose chunked body is
// malformed gets 400 and a closed connection, and is not counted against
// the backend: three of them do not eject the only backend.
func TestMalformedChunkedBodyIsTheClients(t *testing.T) {
	_, be := echoBackend(t, "a")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0"}]
pools:
  - name: app
    backends: [{address: %q}]
    outlier: {consecutive_failures: 3, max_ejected_percent: 100}
routes: [{name: all, pool: app}]
`, be), Options{})
	for i := range 3 {
		resps := rawExchange(t, base, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
		if len(resps) != 1 || resps[0].StatusCode != http.StatusBadRequest || !resps[0].Close {
			t.Fatalf("malformed chunked body %d: responses %v, want one 400 closing the connection", i, statuses(resps))
		}
	}
	resp, e := getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
	if resp.StatusCode != 200 || e.Name != "a" {
		t.Fatalf("after three malformed bodies: status %d, want 200 from the backend", resp.StatusCode)
	}
	if b := p.Backends()[0]; b.Failures != 0 || b.InFlight != 0 {
		t.Errorf("backend charged with %d failures, %d in flight; want 0 and 0", b.Failures, b.InFlight)
	}
}

func statuses(resps []*http.Response) []int {
	var out []int
	for _, r := range resps {
		out = append(out, r.StatusCode)
	}
	return out
}

// TestStalledBodyTimesOut: a POST that sends one byte of the ten it
// announced gets 408 after body_read_timeout, and the backend's in-flight
// count (which least_conn, p2c and least_time read) drops back to 0. A
// route with a longer timeout of its own waits longer.
func TestStalledBodyTimesOut(t *testing.T) {
	_, be := echoBackend(t, "a")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", body_read_timeout: 300ms}]
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - {name: patient, match: {path: {prefix: /patient}}, pool: app, body_read_timeout: 1h}
  - {name: all, pool: app}
`, be), Options{})

	rc := dialRaw(t, base)
	sent := time.Now()
	rc.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx")
	resp, _ := rc.read("POST")
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("stalled body: status %d, close %v; want 408 and close", resp.StatusCode, resp.Close)
	}
	if d := time.Since(sent); d < 300*time.Millisecond {
		t.Errorf("answered after %s, before body_read_timeout", d)
	}
	if !rc.closed() {
		t.Error("connection left open after 408")
	}
	waitFor(t, "the backend's in-flight count to drop to 0", func() bool { return p.Backends()[0].InFlight == 0 })
	if b := p.Backends()[0]; b.Failures != 0 {
		t.Errorf("backend charged with %d failures for a client's stalled body", b.Failures)
	}

	rc = dialRaw(t, base)
	rc.send("POST /patient HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx")
	if !rc.staysOpen(time.Second) {
		t.Fatal("route with body_read_timeout 1h: the listener's 300ms applied")
	}
	rc.send("123456789")
	if resp, body := rc.read("POST"); resp.StatusCode != 200 || !strings.Contains(body, `"body_len":10`) {
		t.Fatalf("patient route: %d %s", resp.StatusCode, body)
	}
}

// TestBodyMinRate: a body that trickles in, each byte within
// body_read_timeout but far below body_min_rate, is cut with 408 once the
// first body_read_timeout has passed.
func TestBodyMinRate(t *testing.T) {
	_, be := echoBackend(t, "a")
	_, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", body_read_timeout: 300ms, body_min_rate: 1000}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, be), Options{})
	rc := dialRaw(t, base)
	rc.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		// The attack: one byte every 50 ms (20 bytes/s), until answered.
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := rc.c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	resp, _ := rc.read("POST")
	close(stop)
	<-done
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("trickled body: status %d, want 408", resp.StatusCode)
	}
}

// TestMaxBodyBytes: a body over max_body_bytes gets 413 — at once, without
// a backend, when Content-Length says so; when it is chunked, as soon as
// it passes the limit. A body at the limit passes.
func TestMaxBodyBytes(t *testing.T) {
	_, be := echoBackend(t, "a")
	p, base := startProxy(t, fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", max_body_bytes: 1000}]
pools: [{name: app, backends: [{address: %q}]}]
routes:
  - {name: small, match: {path: {prefix: /small}}, pool: app, max_body_bytes: 10}
  - {name: all, pool: app}
`, be), Options{})

	resps := rawExchange(t, base, "POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890")
	if len(resps) != 1 || resps[0].StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("Content-Length over the route's limit: %v, want 413", statuses(resps))
	}
	if total, _ := backendRequests(p); total != 0 {
		t.Errorf("backend got %d requests for a body refused by its length", total)
	}
	resps = rawExchange(t, base, "POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n")
	if len(resps) != 1 || resps[0].StatusCode != http.StatusRequestEntityTooLarge || !resps[0].Close {
		t.Fatalf("chunked body over the limit: %v, want one 413 closing the connection", statuses(resps))
	}
	resps = rawExchange(t, base, "POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
	if len(resps) != 1 || resps[0].StatusCode != 200 || decodeEcho(t, resps[0]).BodyLen != 10 {
		t.Fatalf("body at the limit: %v, want 200", statuses(resps))
	}
	resps = rawExchange(t, base, "POST /other HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("x", 100))
	if len(resps) != 1 || resps[0].StatusCode != 200 {
		t.Fatalf("100 bytes under the listener's limit of 1000: %v, want 200", statuses(resps))
	}
	if b := p.Backends()[0]; b.Failures != 0 {
		t.Errorf("backend charged with %d failures for bodies over the limit", b.Failures)
	}
}

func backendRequests(p *Proxy) (total, failed uint64) {
	for _, b := range p.Backends() {
		total += b.Requests
		failed += b.Failures
	}
	return total, failed
}

package concurrency

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
)

func TestGate(t *testing.T) {
	g := NewGate(2)
	for i := range 2 {
		if !g.Enter() {
			t.Fatalf("holder %d refused under max 2", i+1)
		}
	}
	if g.Enter() {
		t.Fatal("third admitted over max 2")
	}
	g.Leave()
	if !g.Enter() {
		t.Fatal("refused after a leave")
	}
	var nilGate *Gate
	if !nilGate.Enter() || !NewGate(0).Enter() {
		t.Error("nil or zero gate refused")
	}
}

func TestGateConcurrent(t *testing.T) {
	g := NewGate(5)
	var mu sync.Mutex
	in, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if !g.Enter() {
					continue
				}
				mu.Lock()
				in++
				peak = max(peak, in)
				mu.Unlock()
				mu.Lock()
				in--
				mu.Unlock()
				g.Leave()
			}
		}()
	}
	wg.Wait()
	if peak > 5 || g.InUse() != 0 {
		t.Errorf("peak %d holders (max 5), %d left in use", peak, g.InUse())
	}
}

func TestPerClient(t *testing.T) {
	p := NewPerClient(2, 64, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	a := netip.MustParseAddr("198.51.100.1")
	k1, ok1 := p.Acquire(a)
	k2, ok2 := p.Acquire(netip.MustParseAddr("::ffff:198.51.100.1"))
	if !ok1 || !ok2 {
		t.Fatal("first two connections refused")
	}
	if _, ok := p.Acquire(a); ok {
		t.Fatal("third connection admitted over max 2")
	}
	if _, ok := p.Acquire(netip.MustParseAddr("198.51.100.2")); !ok {
		t.Error("another client refused")
	}
	// One /64 is one client.
	v6 := []string{"2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::3"}
	n := 0
	for _, s := range v6 {
		if _, ok := p.Acquire(netip.MustParseAddr(s)); ok {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d connections admitted from one /64, want 2", n)
	}
	// Trusted proxies are not counted.
	for i := range 10 {
		if _, ok := p.Acquire(netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i%2))); !ok {
			t.Fatal("exempt address refused")
		}
	}
	p.Release(k1)
	if _, ok := p.Acquire(a); !ok {
		t.Error("refused after a release")
	}
	p.Release(k2)
	before := p.Clients()
	k, _ := p.Acquire(netip.MustParseAddr("198.51.100.9"))
	p.Release(k)
	if p.Clients() != before {
		t.Errorf("an address with no connection left is still held")
	}
}

func TestRefusalIsHTTP(t *testing.T) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(Refusal("connections_per_client"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || resp.Header.Get(LimitHeader) != "connections_per_client" || !resp.Close {
		t.Errorf("refusal: %d %v close=%v", resp.StatusCode, resp.Header, resp.Close)
	}
}

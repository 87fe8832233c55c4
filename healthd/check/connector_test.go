package check

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// A kept socket connects again after every outcome: each check of a
// sequence that alternates between a listener and a closed port gives its
// own result, on the same socket, and every pass is a handshake the
// listener completed.
func TestConnectorReusesSocket(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr string
	}{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			t.Cleanup(func() { ln.Close() })
			accepted := make(chan struct{}, 16)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
					accepted <- struct{}{}
				}
			}()
			closed, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			closedAddr := closed.Addr().String()
			closed.Close()

			up, down := newConnector(ln.Addr().String()), newConnector(closedAddr)
			idle := newIdleSockets()
			t.Cleanup(idle.close)
			kept := -1
			passes := 0
			for i, pass := range []bool{true, false, true, true, false, false, true} {
				c := up
				if !pass {
					c = down
				}
				fd, done, err := c.start(idle)
				if !done {
					syscall.Close(fd)
					t.Fatalf("check %d: connect on loopback did not finish within the calls", i)
				}
				switch {
				case pass && err != nil:
					t.Fatalf("check %d of a listener failed: %v", i, err)
				case !pass && !errors.Is(err, syscall.ECONNREFUSED):
					t.Fatalf("check %d of a closed port: got %v, want connection refused", i, err)
				}
				if pass {
					passes++
				}
				now := idle.take(up.family)
				if now < 0 || (kept >= 0 && now != kept) {
					t.Fatalf("check %d: idle socket %d, want the socket %d kept", i, now, kept)
				}
				kept = now
				idle.put(up.family, now)
			}
			for range passes {
				<-accepted
			}
		})
	}
}

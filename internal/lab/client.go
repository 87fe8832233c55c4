package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/xlb-project/xlb/internal/hostnet"
)

// Client opens connections from inside a namespace (normally the lab's
// client host) to the echo servers, directly or through a VIP. A socket
// keeps the namespace it was created in, so only the dial itself runs on a
// thread switched into the namespace.
type Client struct {
	Netns   hostnet.Netns
	Timeout time.Duration // per operation; default 2s
	// Source, when valid, is the local address sockets are bound to (an
	// address of the namespace, e.g. from Lab.AddClientSources).
	Source netip.Addr
}

func (c Client) timeout() time.Duration {
	if c.Timeout == 0 {
		return 2 * time.Second
	}
	return c.Timeout
}

// Dial opens a TCP or UDP socket ("tcp" or "udp") to addr from the
// namespace.
func (c Client) Dial(network string, addr netip.AddrPort) (net.Conn, error) {
	return c.dialFrom(network, addr, 0)
}

func (c Client) dialFrom(network string, addr netip.AddrPort, localPort uint16) (net.Conn, error) {
	var conn net.Conn
	err := c.Netns.Do(func() error {
		// An IP literal makes the dialer create the socket on this
		// goroutine, which is locked to the switched thread.
		d := net.Dialer{Timeout: c.timeout()}
		if localPort != 0 || c.Source.IsValid() {
			local := &net.TCPAddr{Port: int(localPort)}
			if c.Source.IsValid() {
				local.IP = c.Source.AsSlice()
			}
			d.LocalAddr = local
			if network == "udp" {
				d.LocalAddr = &net.UDPAddr{IP: local.IP, Port: local.Port}
			}
		}
		var err error
		conn, err = d.Dial(network, addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, c.Netns.Name, err)
	}
	return conn, nil
}

// Conn is an open TCP connection to an echo server.
type Conn struct {
	net.Conn
	Backend string // the name the server greeted with
	r       *bufio.Reader
	timeout time.Duration
}

// Open connects to the TCP echo server behind addr and reads its greeting,
// which names the backend that took the connection.
func (c Client) Open(addr netip.AddrPort) (*Conn, error) {
	return c.OpenFrom(addr, 0)
}

// OpenFrom is Open from a chosen local port (0: any), so that a test can
// send the same flow through different balancers. Such a connection is
// closed with a reset, leaving no TIME_WAIT that would block the port.
func (c Client) OpenFrom(addr netip.AddrPort, localPort uint16) (*Conn, error) {
	nc, err := c.dialFrom("tcp", addr, localPort)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok && localPort != 0 {
		_ = tc.SetLinger(0)
	}
	if err != nil {
		return nil, err
	}
	conn := &Conn{Conn: nc, r: bufio.NewReader(nc), timeout: c.timeout()}
	_ = nc.SetReadDeadline(time.Now().Add(conn.timeout))
	line, err := conn.r.ReadString('\n')
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	conn.Backend = strings.TrimSpace(line)
	return conn, nil
}

// Echo sends one line and checks the answer comes from the same backend.
func (c *Conn) Echo(line string) error {
	_ = c.SetDeadline(time.Now().Add(c.timeout))
	if _, err := fmt.Fprintf(c.Conn, "%s\n", line); err != nil {
		return fmt.Errorf("send on connection to %s: %w", c.Backend, err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo from %s: %w", c.Backend, err)
	}
	if want := c.Backend + " " + line + "\n"; got != want {
		return fmt.Errorf("echo from %s = %q, want %q", c.Backend, got, want)
	}
	return nil
}

// Hello opens a TCP connection, reads which backend answered and closes it.
func (c Client) Hello(addr netip.AddrPort) (string, error) {
	conn, err := c.Open(addr)
	if err != nil {
		return "", err
	}
	conn.Close()
	return conn.Backend, nil
}

// UDP sends one datagram and returns the name of the backend that answered.
func (c Client) UDP(addr netip.AddrPort, payload string) (string, error) {
	conn, err := c.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return exchangeUDP(conn, payload, c.timeout())
}

// exchangeUDP sends one datagram to the UDP echo server on a connected
// socket and returns the name of the backend that answered.
func exchangeUDP(conn net.Conn, payload string, timeout time.Duration) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(payload)); err != nil {
		return "", fmt.Errorf("send udp to %s: %w", conn.RemoteAddr(), err)
	}
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read udp answer from %s: %w", conn.RemoteAddr(), err)
	}
	name, rest, ok := strings.Cut(string(buf[:n]), " ")
	if !ok || rest != payload {
		return "", fmt.Errorf("udp answer from %s = %q, want \"NAME %s\"", conn.RemoteAddr(), buf[:n], payload)
	}
	return name, nil
}

// HTTPGet fetches / over a new connection and returns the backend's name.
func (c Client) HTTPGet(ctx context.Context, addr netip.AddrPort) (string, error) {
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return c.Dial("tcp", addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: c.timeout()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("http get %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("http get %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("http get %s: status %s", addr, resp.Status)
	}
	name := strings.TrimSpace(string(body))
	if name == "" {
		return "", errors.New("http get: empty answer")
	}
	return name, nil
}

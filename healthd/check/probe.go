package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxBody is how much of an HTTP body a check reads.
const maxBody = 64 << 10

// userAgent is sent with every HTTP check.
const userAgent = "xlb-health-check/1"

// probe runs one check; it returns nil when the check passes. ctx carries
// the check's deadline.
type probe func(ctx context.Context) error

// newProbe returns the probe for a validated spec with defaults applied.
func newProbe(s Spec) probe {
	switch s.Kind {
	case TCP:
		return newTCPProbe(s.Target)
	case HTTP, HTTPS:
		return newHTTPProbe(s)
	case UDP:
		return func(ctx context.Context) error { return probeUDP(ctx, s) }
	}
	return func(context.Context) error { return fmt.Errorf("check kind %q: not supported", s.Kind) }
}

// dialer makes the connections of HTTP(S) and UDP checks, and of TCP checks
// whose target is a host name. No keep-alive probes: a check's connection
// lives for less than its timeout.
var dialer = net.Dialer{KeepAlive: -1}

// newTCPProbe returns a connect check. For an IP address it makes the socket
// calls itself (about half the CPU of net.Dialer's path per check when the
// connect finishes within the call, as on this host; about the same when
// it waits in the poller), for a host name it uses net.Dialer.
func newTCPProbe(target string) probe {
	c := newConnector(target)
	if c == nil {
		return func(ctx context.Context) error { return dialTCP(ctx, target) }
	}
	return c.probe
}

func dialTCP(ctx context.Context, target string) error {
	c, err := dialer.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

// connector makes the connections of TCP checks of an IP address with
// direct socket calls, in two steps: start, which needs no context and
// never waits, and wait, only for a connect that start left in progress.
type connector struct {
	ap     netip.AddrPort
	family int
	sa     syscall.Sockaddr
}

// newConnector returns the connector of target, or nil when target is not
// an IP address and port (a host name, or an address with a zone).
func newConnector(target string) *connector {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || ap.Addr().Zone() != "" {
		return nil
	}
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return &connector{ap: ap, family: syscall.AF_INET,
			sa: &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}}
	}
	return &connector{ap: ap, family: syscall.AF_INET6,
		sa: &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}}
}

// probe connects, waiting in the poller until ctx ends if need be.
func (c *connector) probe(ctx context.Context) error {
	fd, done, err := c.start(nil)
	if done {
		return err
	}
	dl, _ := ctx.Deadline()
	_, err = c.wait(ctx, fd, dl)
	return err
}

// start connects a socket. It never blocks. When the connect finished
// within the calls (a backend on this host) it returns done and the check's
// outcome, and the socket is reset and kept in idle for the next check;
// otherwise it returns the socket for wait (any backend that is not on this
// host). idle is nil for a socket of the check's own, closed at the end.
//
// A kept socket saves a socket and a close call and their kernel work per
// check: connect with AF_UNSPEC takes an established connection back to
// CLOSE, sending a reset as a close with SO_LINGER 0 would, so a checker
// making thousands of connections a second leaves no sockets in TIME_WAIT,
// and the socket can connect again (the connect clears the socket's
// pending error). The calls per check: connect, poll with no wait (a
// non-blocking connect answers EINPROGRESS even when the handshake
// completes before the call returns, as on loopback), getsockopt SO_ERROR
// only when it failed, connect AF_UNSPEC. A new socket (the first, and one
// in place of each that went to wait) costs socket, non-blocking and
// close-on-exec in one call, and setsockopt SO_LINGER 0, for the close of a
// socket that waited.
func (c *connector) start(idle *idleSockets) (fd int, done bool, err error) {
	fd = idle.take(c.family)
	if fd < 0 {
		if fd, err = newSocket(c.family); err != nil {
			return -1, true, err
		}
	}
	err = syscall.Connect(fd, c.sa)
	switch {
	case err == nil:
	case err != syscall.EINPROGRESS:
		err = fmt.Errorf("connect %s: %w", c.ap, err)
	case idle == nil:
		return fd, false, nil // wait polls first
	default:
		ok, cerr := connected(fd)
		if !ok || forcePoller {
			idle.refill(c.family)
			return fd, false, nil
		}
		if cerr != nil {
			err = fmt.Errorf("connect %s: %w", c.ap, cerr)
		} else {
			err = nil
		}
	}
	idle.put(c.family, fd)
	return -1, true, err
}

// idleSockets keeps one idle TCP socket per address family for the checks
// the scheduling goroutine starts; only that goroutine uses it. A nil
// *idleSockets keeps nothing.
type idleSockets struct{ v4, v6 int }

func newIdleSockets() *idleSockets { return &idleSockets{v4: -1, v6: -1} }

func (s *idleSockets) slot(family int) *int {
	if family == syscall.AF_INET {
		return &s.v4
	}
	return &s.v6
}

// take returns the idle socket of family and forgets it, or -1.
func (s *idleSockets) take(family int) int {
	if s == nil {
		return -1
	}
	p := s.slot(family)
	fd := *p
	*p = -1
	return fd
}

// put disconnects fd (with a reset if it was connected) and keeps it as the
// idle socket of family; it closes fd when that fails or s is nil.
func (s *idleSockets) put(family, fd int) {
	if s != nil && disconnect(fd) == nil {
		*s.slot(family) = fd
		return
	}
	syscall.Close(fd)
}

// refill opens the idle socket of family, given away to wait for its
// connect, so that the checker keeps one socket per family it has used, no
// more and no fewer.
func (s *idleSockets) refill(family int) {
	if s == nil {
		return
	}
	if fd, err := newSocket(family); err == nil {
		*s.slot(family) = fd
	}
}

// newSocket opens a non-blocking TCP socket of family that closes with a
// reset (SO_LINGER 0).
func newSocket(family int) (int, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open socket: %w", err)
	}
	_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	return fd, nil
}

// close closes the idle sockets.
func (s *idleSockets) close() {
	for _, p := range []*int{&s.v4, &s.v6} {
		if *p >= 0 {
			syscall.Close(*p)
			*p = -1
		}
	}
}

// disconnect takes the socket fd back to CLOSE: connect to an address of
// family AF_UNSPEC.
func disconnect(fd int) error {
	var sa syscall.RawSockaddr // zero: AF_UNSPEC
	_, _, errno := syscall.Syscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if errno != 0 {
		return errno
	}
	return nil
}

// wait waits in Go's network poller, until deadline (if not zero) or until
// ctx ends, for the connect start left in progress on fd, and closes fd. It
// reports whether the connect had not finished when it was first asked.
// The deadline is the file's, so a check makes no context or timer of its
// own.
func (c *connector) wait(ctx context.Context, fd int, deadline time.Time) (waited bool, err error) {
	f := os.NewFile(uintptr(fd), "tcp-check")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("connect %s: %w", c.ap, err)
	}
	if !deadline.IsZero() {
		_ = f.SetWriteDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		done, err := connected(int(fd))
		cerr = err
		waited = waited || !done || forcePoller
		return done
	})
	if werr != nil {
		return true, fmt.Errorf("connect %s: %w", c.ap, werr)
	}
	if cerr != nil {
		return waited, fmt.Errorf("connect %s: %w", c.ap, cerr)
	}
	return waited, nil
}

// forcePoller makes every TCP check wait in the poller, as a connect to a
// backend on another host does; set by the benchmark only.
var forcePoller bool

// connected reports whether the connect on fd has finished, and its error:
// one poll call with no wait, then SO_ERROR only if it failed.
func connected(fd int) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := unix.Poll(pfd, 0)
	if err != nil {
		return true, fmt.Errorf("poll: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
		soerr, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		switch {
		case err != nil:
			return true, err
		case soerr != 0:
			return true, syscall.Errno(soerr)
		}
		return true, syscall.ECONNRESET
	}
	return true, nil
}

func newHTTPProbe(s Spec) probe {
	scheme := "http"
	if s.Kind == HTTPS {
		scheme = "https"
	}
	target := scheme + "://" + s.Target + s.Path
	serverName := s.Host
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(s.Target)
	} else if h, _, err := net.SplitHostPort(serverName); err == nil {
		serverName = h
	}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true, // every check tests a new connection
			TLSClientConfig: &tls.Config{
				ServerName:         serverName,
				InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // the user's explicit choice
			},
			MaxResponseHeaderBytes: 64 << 10,
			ForceAttemptHTTP2:      false,
		},
		// A redirect is an answer: judge its status, do not follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		if s.Host != "" {
			req.Host = s.Host
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // drop the "Get URL:" prefix
			}
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode < s.StatusMin || resp.StatusCode > s.StatusMax {
			return fmt.Errorf("status %d, want %d-%d", resp.StatusCode, s.StatusMin, s.StatusMax)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		if s.BodyContains != "" && !strings.Contains(string(body), s.BodyContains) {
			return fmt.Errorf("body does not contain %q", s.BodyContains)
		}
		return nil
	}
}

func probeUDP(ctx context.Context, s Spec) error {
	c, err := dialer.DialContext(ctx, "udp", s.Target)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(s.Payload); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("receive: port unreachable: %w", err)
			}
			return fmt.Errorf("receive: %w", err)
		}
		if len(s.Expect) == 0 || bytes.Contains(buf[:n], s.Expect) {
			return nil
		}
		// Not the expected reply: keep reading until the deadline.
	}
}

// describe turns a probe error into the Result's text.
func describe(ctx context.Context, err error, timeout time.Duration) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	return err.Error()
}

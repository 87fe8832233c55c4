package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Ports of the echo server every backend runs.
const (
	HTTPPort = 80 // GET / answers NAME; GET /healthz answers ok
	EchoPort = 7  // TCP: greets with NAME, then answers each line with "NAME LINE"; UDP: answers "NAME PAYLOAD"
)

// ServerConfig configures the echo server of a backend.
type ServerConfig struct {
	Name     string // answered to every request; required
	HTTPPort int    // default HTTPPort
	EchoPort int    // TCP and UDP; default EchoPort
	Log      *slog.Logger
}

// Serve runs the echo server until ctx ends: HTTP, TCP and UDP on every
// address of the host, answering with the backend's name so that a client
// sees which backend the balancer chose. UDP answers come from the address
// the request was sent to (a VIP on lo), as the client expects.
func Serve(ctx context.Context, cfg ServerConfig) error {
	if cfg.Name == "" {
		return errors.New("name: required, the name the server answers with")
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = HTTPPort
	}
	if cfg.EchoPort == 0 {
		cfg.EchoPort = EchoPort
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &server{cfg: cfg, conns: map[net.Conn]struct{}{}}

	var lc net.ListenConfig
	httpL, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(cfg.HTTPPort))
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	echoL, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(cfg.EchoPort))
	if err != nil {
		httpL.Close()
		return fmt.Errorf("listen tcp echo: %w", err)
	}
	udp4, err := listenUDP(ctx, "udp4", "0.0.0.0", cfg.EchoPort)
	if err != nil {
		httpL.Close()
		echoL.Close()
		return err
	}
	udp6, err := listenUDP(ctx, "udp6", "::", cfg.EchoPort)
	if err != nil {
		httpL.Close()
		echoL.Close()
		udp4.Close()
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Backend", cfg.Name)
		fmt.Fprintln(w, cfg.Name)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() {
		if err := hs.Serve(httpL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	})
	wg.Go(func() { errc <- s.acceptEcho(ctx, echoL) })
	for _, u := range []*net.UDPConn{udp4, udp6} {
		wg.Go(func() { errc <- s.serveUDP(ctx, u) })
	}
	cfg.Log.Info("echo server up", "name", cfg.Name, "http_port", cfg.HTTPPort, "echo_port", cfg.EchoPort)

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	_ = hs.Close()
	echoL.Close()
	udp4.Close()
	udp6.Close()
	s.closeConns()
	wg.Wait()
	if first == nil || ctx.Err() != nil {
		return nil
	}
	return first
}

type server struct {
	cfg   ServerConfig
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func (s *server) acceptEcho(ctx context.Context, l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept tcp echo: %w", err)
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.echo(c)
	}
}

// echo greets with the name, then answers each line with "NAME LINE".
func (s *server) echo(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "%s\n", s.cfg.Name)
	if w.Flush() != nil {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		fmt.Fprintf(w, "%s %s\n", s.cfg.Name, sc.Text())
		if w.Flush() != nil {
			return
		}
	}
}

// listenUDP opens a UDP socket that reports each datagram's destination
// address, so that answers can be sent from it.
func listenUDP(ctx context.Context, network, host string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if network == "udp4" {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
			} else {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, network, net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listen %s echo: %w", network, err)
	}
	return pc.(*net.UDPConn), nil
}

func (s *server) serveUDP(ctx context.Context, u *net.UDPConn) error {
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		n, oobn, _, from, err := u.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read udp echo: %w", err)
		}
		reply := append([]byte(s.cfg.Name+" "), buf[:n]...)
		var replyOOB []byte
		if dst, ok := pktinfoDst(oob[:oobn]); ok {
			replyOOB = pktinfoSrc(dst)
		}
		if _, _, err := u.WriteMsgUDPAddrPort(reply, replyOOB, from); err != nil {
			s.cfg.Log.Debug("udp echo reply failed", "err", err)
		}
	}
}

// pktinfoDst returns the destination address from an IP_PKTINFO or
// IPV6_PKTINFO control message.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= 12:
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO && len(m.Data) >= 16:
			return netip.AddrFrom16([16]byte(m.Data[:16])), true
		}
	}
	return netip.Addr{}, false
}

// pktinfoSrc builds the control message that sends a datagram from src.
func pktinfoSrc(src netip.Addr) []byte {
	var level, typ int
	var data []byte
	if src.Is4() {
		// struct in_pktinfo: ifindex, spec_dst (the source to use), addr.
		level, typ = syscall.IPPROTO_IP, syscall.IP_PKTINFO
		data = make([]byte, 12)
		a := src.As4()
		copy(data[4:8], a[:])
	} else {
		// struct in6_pktinfo: addr (the source to use), ifindex.
		level, typ = syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO
		data = make([]byte, 20)
		a := src.As16()
		copy(data[:16], a[:])
	}
	b := make([]byte, syscall.CmsgSpace(len(data)))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(syscall.CmsgLen(len(data)))
	copy(b[syscall.CmsgLen(0):], data)
	return b
}

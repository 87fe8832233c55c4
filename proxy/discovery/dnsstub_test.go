package discovery

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// DNS record types the stub answers.
const (
	dnsA    = 1
	dnsAAAA = 28
	dnsSRV  = 33
)

type srvRecord struct {
	priority, weight, port uint16
	target                 string
}

// dnsStub is a tiny authoritative DNS server on 127.0.0.1 (UDP) for tests:
// it answers A, AAAA and SRV questions from its tables and NOERROR with no
// answer otherwise. Records can change while it runs.
type dnsStub struct {
	conn net.PacketConn

	mu      sync.Mutex
	addrs   map[string][]netip.Addr
	srv     map[string][]srvRecord
	queries int
}

func startDNS(t *testing.T) *dnsStub {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsStub{conn: conn, addrs: map[string][]netip.Addr{}, srv: map[string][]srvRecord{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				conn.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

// resolver returns a pure-Go resolver that sends every query to the stub.
func (s *dnsStub) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", s.conn.LocalAddr().String())
		},
	}
}

func (s *dnsStub) set(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs[strings.ToLower(name)] = nil
	for _, a := range addrs {
		s.addrs[strings.ToLower(name)] = append(s.addrs[strings.ToLower(name)], netip.MustParseAddr(a))
	}
}

func (s *dnsStub) setSRV(name string, recs ...srvRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[strings.ToLower(name)] = recs
}

// answer builds the response to one query, or nil to ignore it.
func (s *dnsStub) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	// Question: labels, then type and class.
	var labels []string
	i := 12
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	name := strings.ToLower(strings.Join(labels, ".") + ".")

	s.mu.Lock()
	s.queries++
	var rdatas [][]byte
	switch qtype {
	case dnsA, dnsAAAA:
		for _, a := range s.addrs[name] {
			if a.Is4() && qtype == dnsA {
				b := a.As4()
				rdatas = append(rdatas, b[:])
			}
			if a.Is6() && qtype == dnsAAAA {
				b := a.As16()
				rdatas = append(rdatas, b[:])
			}
		}
	case dnsSRV:
		for _, r := range s.srv[name] {
			b := binary.BigEndian.AppendUint16(nil, r.priority)
			b = binary.BigEndian.AppendUint16(b, r.weight)
			b = binary.BigEndian.AppendUint16(b, r.port)
			for _, l := range strings.Split(strings.TrimSuffix(r.target, "."), ".") {
				b = append(b, byte(len(l)))
				b = append(b, l...)
			}
			b = append(b, 0)
			rdatas = append(rdatas, b)
		}
	}
	s.mu.Unlock()

	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                                              // id
	binary.BigEndian.PutUint16(resp[2:], 0x8180|uint16(q[2]&1)<<8) // response, recursion desired+available
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(rdatas)))
	resp = append(resp, question...)
	for _, rd := range rdatas {
		resp = append(resp, 0xc0, 12) // name: pointer to the question
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = binary.BigEndian.AppendUint32(resp, 5) // TTL
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rd)))
		resp = append(resp, rd...)
	}
	return resp
}

package h1

import (
	"net"
	"sync"
)

// handedConn is a connection given to net/http with the bytes the lean
// path had already read.
type handedConn struct {
	net.Conn
	rest []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn gives the connection underneath (the proxy finds its own
// wrapper through it).
func (c *handedConn) NetConn() net.Conn { return c.Conn }

// handoffListener is the listener of the net/http server behind a lean
// one: Accept returns the connections handed off.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to the server; false when it no longer accepts.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

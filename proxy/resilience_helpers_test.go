package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xlb-project/xlb/proxy/admin"
)

// Modes of a ctlBackend.
const (
	modeOK    int32 = iota // echo, 200
	mode503                // read the body, answer 503
	modeReset              // read the body, close the connection without a response
	modeHold               // wait until released, then echo
)

// ctlBackend is a loopback backend whose behaviour a test switches. It
// counts the requests that reached it and echoes like echoBackend, with the
// SHA-256 of the body it read in X-Body-Sha256.
type ctlBackend struct {
	name string
	addr string
	mode atomic.Int32
	hits atomic.Int64
	// methods counts hits by method.
	mu      sync.Mutex
	methods map[string]int
	release chan struct{}
	relOnce sync.Once
}

func newCtlBackend(t *testing.T, name string) *ctlBackend {
	t.Helper()
	b := &ctlBackend{name: name, methods: map[string]int{}, release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(b.serve))
	b.addr = strings.TrimPrefix(srv.URL, "http://")
	t.Cleanup(func() {
		b.unhold()
		srv.CloseClientConnections()
		srv.Close()
	})
	return b
}

func (b *ctlBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	b.methods[r.Method]++
	b.mu.Unlock()
	data, _ := io.ReadAll(r.Body)
	switch b.mode.Load() {
	case mode503:
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	case modeReset:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
			}
		}
		return
	case modeHold:
		<-b.release
	}
	sum := sha256.Sum256(data)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", b.name)
	w.Header().Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
	_ = jsonEncode(w, echo{Name: b.name, Method: r.Method, Host: r.Host, Path: r.URL.Path, BodyLen: len(data)})
}

func (b *ctlBackend) unhold() { b.relOnce.Do(func() { close(b.release) }) }

func (b *ctlBackend) count(method string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.methods[method]
}

// do sends a request and returns the status, the header and the body.
func do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func backendInfo(p *Proxy, addr string) admin.BackendInfo {
	for _, b := range p.Backends() {
		if b.Address == addr {
			return b
		}
	}
	return admin.BackendInfo{}
}

package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/xlb-project/xlb/proxy/internal/upstream"
	"github.com/xlb-project/xlb/proxy/internal/wire"
	"github.com/xlb-project/xlb/proxy/lastgood"
)

// roundTrip and relay forward a request that is not an upgrade (attempt.go
// drives them, once per attempt): the proxy's own lean
// version of what net/http/httputil.ReverseProxy does (which still carries
// upgrades), with the same rules: hop-by-hop headers and every header the
// client names in Connection are dropped from the request and from the
// response, the client's forwarding headers are replaced (or extended, for
// trusted proxies), bodies stream through pooled buffers, and a response
// the backend cuts short is cut short to the client too.
//
// Unlike ReverseProxy it does not clone the request: it builds the outgoing
// header from the incoming one by reference (values are never changed in
// place; an added value goes to a copy) and copies the response header the
// same way. The exchange with the backend is the proxy's own client
// (proxy/internal/upstream), in this goroutine.
//
// roundTrip sends r to e.backend and reads the response head.
func (st *state) roundTrip(ctx context.Context, w http.ResponseWriter, e *exchange, r *http.Request) (*upstream.Response, error) {
	in := r.Header
	h := e.outHeader
	if h == nil {
		h = make(http.Header, len(in)+6)
		e.outHeader = h
	}
	conn := in["Connection"]
	for k, vv := range in {
		if wire.IsHopHeader(k) || isForwardingHeader(k) || (len(conn) > 0 && wire.TokenListHas(conn, k)) {
			continue
		}
		h[k] = vv
	}
	if wire.TokenListHas(in["Te"], "trailers") {
		h["Te"] = teTrailers[:1:1]
	}
	st.forwardingHeaders(h, in, e, r.Host)

	host := r.Host
	if host == "" {
		host = e.backend.ID
	}
	return st.client.Do(ctx, w, e.backend.ID, r, host, h, e.sent)
}

// relay sends a backend's response to the client; a GET answered 200 is
// also kept in lastGood when that is set and the response may be kept.
func (st *state) relay(w http.ResponseWriter, e *exchange, r *http.Request, resp *upstream.Response, lastGood *lastgood.Cache) {
	e.respondedAt = time.Now()
	ctx := r.Context()

	rh := resp.Header
	if c := rh["Connection"]; len(c) > 0 {
		for k := range rh {
			if wire.TokenListHas(c, k) {
				delete(rh, k)
			}
		}
	}
	for _, k := range wire.HopHeaders {
		delete(rh, k)
	}
	e.route.respOps.apply(rh)
	dst := w.Header()
	for k, vv := range rh {
		if old, ok := dst[k]; ok {
			dst[k] = append(old[:len(old):len(old)], vv...)
		} else {
			dst[k] = vv
		}
	}
	if len(resp.Trailers) > 0 {
		dst["Trailer"] = []string{strings.Join(resp.Trailers, ", ")}
	}
	w.WriteHeader(resp.Status)

	stream := resp.Length == -1 || strings.HasPrefix(headerFirst(rh, "Content-Type"), "text/event-stream")
	var capture *lastgood.Capture
	if lastGood != nil && !stream && lastgood.Storable(r.Method, r.Header, resp.Status, dst) && resp.Length <= lastGood.MaxBodyBytes() {
		capture = lastgood.NewCapture(lastGood.MaxBodyBytes())
		w = captureWriter{w, capture}
	}
	if err := copyBody(w, &resp.Body, stream); err != nil {
		if ctx.Err() != nil || errors.Is(err, errClientWrite) {
			return // the client went away or the route timed out
		}
		// The backend broke off the body: make the client see a cut
		// response, not a complete one.
		e.failed = true
		st.log.Warn("backend response cut short", "route", e.route.name, "backend", e.backend.ID, "request_id", e.reqID, "err", err)
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Body.Trailer() {
		if !slices.Contains(resp.Trailers, k) {
			k = http.TrailerPrefix + k // not announced before the header
		}
		dst[k] = vv
	}
	if capture != nil {
		if body, ok := capture.Body(); ok {
			lastGood.Put(lastGoodKey(r), resp.Status, dst, body, time.Now())
		}
	}
}

// captureWriter copies what is written to a capture.
type captureWriter struct {
	http.ResponseWriter
	c *lastgood.Capture
}

func (cw captureWriter) Write(p []byte) (int, error) {
	n, err := cw.ResponseWriter.Write(p)
	cw.c.Write(p[:n])
	return n, err
}

func (cw captureWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

func headerFirst(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

var errClientWrite = errors.New("write to client")

// copyBody streams src to w with a pooled buffer, flushing after every
// write when stream is set.
func copyBody(w http.ResponseWriter, src io.Reader, stream bool) error {
	bp := wire.Buffers.Get().(*[]byte)
	defer wire.Buffers.Put(bp)
	buf := *bp
	var flush func() error
	if stream {
		if f, ok := w.(http.Flusher); ok {
			flush = func() error { f.Flush(); return nil }
		} else {
			flush = http.NewResponseController(w).Flush
		}
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errClientWrite
			}
			if flush != nil {
				if err := flush(); err != nil {
					return errClientWrite
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// Read-only values shared by all requests.
var (
	teTrailers = []string{"trailers"}
)

func isForwardingHeader(k string) bool {
	switch k {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded":
		return true
	}
	return false
}

package h1

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-project/xlb/proxy/internal/wire"
)

// writer is the ResponseWriter of the lean path, one per connection.
type writer struct {
	c      *conn
	header http.Header
	pend   []byte // body held back before the head is sent

	status      int
	wroteHeader bool // the final status is set
	headerSent  bool // the head is in the write buffer
	head        bool // response to HEAD
	chunked     bool
	closeAfter  bool
	clen        int64 // declared Content-Length; -1: none
	written     int64
	err         error // a failed write to the client
}

func (w *writer) reset(head, closeAfter bool) {
	clear(w.header)
	*w = writer{c: w.c, header: w.header, pend: w.pend[:0], head: head, closeAfter: closeAfter, clen: -1}
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(code int) {
	if w.headerSent || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once, with the header as it is.
		bw := w.c.bw
		writeStatusLine(bw, code)
		w.writeFields(bw, code)
		_, _ = bw.WriteString("\r\n")
		w.setErr(bw.Flush())
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.clen = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *writer) bodyAllowed() bool {
	s := w.status
	return !(s >= 100 && s < 200 || s == http.StatusNoContent || s == http.StatusNotModified)
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	w.written += int64(len(p))
	if !w.headerSent {
		if len(w.pend)+len(p) <= cap(w.pend) {
			w.pend = append(w.pend, p...)
			return len(p), nil
		}
		w.sendHead(false, p)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *writer) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// writeBody writes p to the connection, framed as a chunk when chunked.
func (w *writer) writeBody(p []byte) {
	if w.head || len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		wire.WriteUint(bw, uint64(len(p)), 16)
		_, _ = bw.WriteString("\r\n")
	}
	_, err := bw.Write(p)
	w.setErr(err)
	if w.chunked {
		_, err = bw.WriteString("\r\n")
		w.setErr(err)
	}
}

// Flush sends the head if not yet sent and everything buffered.
func (w *writer) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *writer) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHead(false, nil)
	}
	w.setErr(w.c.bw.Flush())
	return w.err
}

// finish completes the response after the handler returned.
func (w *writer) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHead(true, nil)
	}
	bw := w.c.bw
	if w.chunked && !w.head {
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers(bw)
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
	}
	if w.clen >= 0 && w.written != w.clen && !w.head && w.bodyAllowed() {
		w.closeAfter = true // the client would wait for the rest
	}
	w.setErr(bw.Flush())
	return w.err
}

// sendHead writes the status line and header, then the held-back body.
// done: the handler has returned, so the body's length is known; first is
// the body write that did not fit the held-back part (for sniffing).
func (w *writer) sendHead(done bool, first []byte) {
	w.headerSent = true
	h := w.header
	bw := w.c.bw
	allowed := w.bodyAllowed()
	_, trailers := h["Trailer"]
	if allowed {
		switch {
		case w.clen >= 0:
		case done && !trailers && (!w.head || len(w.pend) > 0):
			w.clen = int64(len(w.pend))
		case !w.head:
			w.chunked = true
		}
	}
	if wire.TokenListHas(h["Connection"], "close") || w.c.s.closing.Load() {
		w.closeAfter = true
	}
	writeStatusLine(bw, w.status)
	w.writeFields(bw, w.status)
	if _, ok := h["Date"]; !ok {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(w.c.s.dateFor(time.Now()))
		_, _ = bw.WriteString("\r\n")
	}
	if allowed {
		sniff := w.pend
		if len(sniff) == 0 {
			sniff = first
		}
		if _, ok := h["Content-Type"]; !ok && len(h["Content-Encoding"]) == 0 && len(sniff) > 0 {
			_, _ = bw.WriteString("Content-Type: ")
			_, _ = bw.WriteString(http.DetectContentType(sniff))
			_, _ = bw.WriteString("\r\n")
		}
		if _, ok := h["Content-Length"]; !ok && w.clen >= 0 {
			_, _ = bw.WriteString("Content-Length: ")
			wire.WriteUint(bw, uint64(w.clen), 10)
			_, _ = bw.WriteString("\r\n")
		}
		if w.chunked {
			_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
	}
	if w.closeAfter && !wire.TokenListHas(h["Connection"], "close") {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.setErr(err)
	pend := w.pend
	w.pend = w.pend[:0]
	w.writeBody(pend)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	if code >= 100 && code < 600 {
		_, _ = bw.WriteString(statusLines[code-100])
		return
	}
	_, _ = bw.WriteString(statusLine(code))
}

// statusLines are the status lines of codes 100-599, made once.
var statusLines = func() []string {
	l := make([]string, 500)
	for i := range l {
		l[i] = statusLine(100 + i)
	}
	return l
}()

func statusLine(code int) string {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
}

// writeFields writes the handler's header fields, leaving out what the
// server decides (framing, and what the status does not allow) and names
// that are not valid tokens; CR and LF in values become spaces.
func (w *writer) writeFields(bw *bufio.Writer, code int) {
	noBody := code < 200 || code == http.StatusNoContent
	for k, vv := range w.header {
		switch k {
		case "Transfer-Encoding":
			continue
		case "Content-Length":
			if noBody || code == http.StatusNotModified {
				continue
			}
		case "Content-Type":
			if code == http.StatusNotModified {
				continue
			}
		case "Connection":
			if w.closeAfter {
				// Written once below, as "close".
				if !wire.TokenListHas(vv, "close") {
					continue
				}
			}
		}
		if !wire.ValidHeaderName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one header or trailer field line.
func writeField(bw *bufio.Writer, name, value string) {
	_, _ = bw.WriteString(name)
	_, _ = bw.WriteString(": ")
	wire.WriteValue(bw, trimSpaceCRLF(value))
	_, _ = bw.WriteString("\r\n")
}

// writeTrailers writes the values of the trailer fields announced in the
// Trailer header and those set with http.TrailerPrefix.
func (w *writer) writeTrailers(bw *bufio.Writer) {
	h := w.header
	for _, list := range h["Trailer"] {
		for list != "" {
			var k string
			k, list, _ = wire.CutComma(list)
			k = http.CanonicalHeaderKey(k)
			if !wire.ValidHeaderName(k) {
				continue
			}
			for _, v := range h[k] {
				writeField(bw, k, v)
			}
		}
	}
	for k, vv := range h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !wire.ValidHeaderName(name) {
			continue
		}
		for _, v := range vv {
			writeField(bw, name, v)
		}
	}
}

// trimSpaceCRLF trims spaces, tabs, CR and LF at both ends (as net/http
// does with values it writes).
func trimSpaceCRLF(s string) string {
	isSp := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(s) > 0 && isSp(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSp(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

var _ io.Writer = (*writer)(nil)

package upstream

// The wire format of the backend client: the request head and body it
// writes, and the response head and body framing it reads, strictly.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/xlb-project/xlb/proxy/internal/wire"
)

// writeHead writes the request line and header of an outgoing request.
func writeHead(bw *bufio.Writer, r *http.Request, host string, h http.Header, chunked, expect bool) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	if r.URL.Opaque != "" {
		bw.WriteString(r.URL.Opaque)
	} else {
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/"
		}
		bw.WriteString(p)
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	wire.WriteValue(bw, host)
	bw.WriteString("\r\n")
	for k, vv := range h {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Expect":
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			wire.WriteValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case chunked:
		if len(r.Trailer) > 0 {
			bw.WriteString("Trailer: ")
			first := true
			for k := range r.Trailer {
				if !first {
					bw.WriteString(", ")
				}
				first = false
				bw.WriteString(k)
			}
			bw.WriteString("\r\n")
		}
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		wire.WriteUint(bw, uint64(r.ContentLength), 10)
		bw.WriteString("\r\n")
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if expect {
		bw.WriteString("Expect: 100-continue\r\n")
	}
	bw.WriteString("\r\n")
}

// writeBody streams a request body to the backend (chunked when its length
// is unknown, with the client's trailers) and flushes.
func writeBody(bw *bufio.Writer, body io.Reader, chunked bool, r *http.Request) error {
	bp := wire.Buffers.Get().(*[]byte)
	defer wire.Buffers.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if chunked {
				wire.WriteUint(bw, uint64(n), 16)
				bw.WriteString("\r\n")
			}
			if _, err := bw.Write(buf[:n]); err != nil {
				return err
			}
			if chunked {
				bw.WriteString("\r\n")
			}
			if rerr == nil {
				// Stream: what the client sent so far goes out now.
				if err := bw.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
	}
	if !chunked && total != r.ContentLength {
		return fmt.Errorf("%w: %d bytes, Content-Length said %d", ErrRequestBody, total, r.ContentLength)
	}
	if chunked {
		bw.WriteString("0\r\n")
		for k, vv := range r.Trailer {
			for _, v := range vv {
				bw.WriteString(k)
				bw.WriteString(": ")
				wire.WriteValue(bw, v)
				bw.WriteString("\r\n")
			}
		}
		bw.WriteString("\r\n")
	}
	return bw.Flush()
}

// readHead reads and checks a response head: status line, header fields,
// and the framing of the body that follows.
func readHead(bc *bconn, method string) (*Response, error) {
	br := bc.br
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, errHeadTooLarge
		}
		if len(line) == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
			return nil, fmt.Errorf("%w: %w", errNoResponse, eofUnexpected(err))
		}
		return nil, eofUnexpected(err)
	}
	size := len(line)
	status, http10, err := parseStatusLine(line)
	if err != nil {
		return nil, err
	}
	h := bc.hdr
	clear(h)
	resp := &bc.resp
	*resp = Response{Status: status, Header: h, Length: -1, bc: bc, reuse: !http10}
	if err := readFields(br, h, size); err != nil {
		return nil, err
	}
	if c := h["Connection"]; len(c) > 0 {
		if wire.TokenListHas(c, "close") {
			resp.reuse = false
		} else if http10 && wire.TokenListHas(c, "keep-alive") {
			resp.reuse = true
		}
	}
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	if hasTE && hasCL {
		return nil, fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errMalformed)
	}
	var length int64 = -1
	if hasCL {
		n, ok := parseContentLength(cl)
		if !ok {
			return nil, fmt.Errorf("%w: Content-Length %q", errMalformed, cl)
		}
		length = n
	}
	if hasTE && (len(te) != 1 || !wire.EqualFoldASCII(te[0], "chunked") || http10) {
		return nil, fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, te)
	}
	switch {
	case method == http.MethodHead || status < 200 || status == http.StatusNoContent || status == http.StatusNotModified:
		resp.Body.init(br, 0, false) // no body, whatever the header says
		resp.Length = 0
	case hasTE:
		resp.Body.init(br, -1, true)
	case hasCL:
		resp.Length = length
		resp.Body.init(br, length, false)
	default:
		resp.Body.init(br, -1, false) // until the backend closes
		resp.reuse = false
	}
	if t := h["Trailer"]; len(t) > 0 && resp.Body.chunked {
		for _, v := range t {
			for v != "" {
				var name string
				name, v, _ = wire.CutComma(v)
				if name != "" {
					resp.Trailers = append(resp.Trailers, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	return resp, nil
}

// parseStatusLine accepts "HTTP/1.x NNN[ reason]\r\n".
func parseStatusLine(line []byte) (status int, http10 bool, err error) {
	line = trimEOL(line)
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, false, fmt.Errorf("%w: status %d", errMalformed, status)
	}
	for _, c := range line[12:] {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
		}
	}
	return status, line[7] == '0', nil
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func trimEOL(line []byte) []byte {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
		if n > 0 && line[n-1] == '\r' {
			n--
		}
	}
	return line[:n]
}

// readFields reads header fields up to the empty line into h. size is what
// the head used so far. Field values share one string per head and the
// value slices one backing array.
func readFields(br *bufio.Reader, h http.Header, size int) error {
	// Gather the lines (one may not fit the reader's buffer) without their
	// line ends, then make one string of them.
	var stack [2048]byte
	raw := stack[:0]
	n := 0
	for {
		start := len(raw)
		for {
			line, err := br.ReadSlice('\n')
			size += len(line)
			if size > maxResponseHead {
				return errHeadTooLarge
			}
			raw = append(raw, line...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return fmt.Errorf("read response head from backend: %w", eofUnexpected(err))
			}
		}
		l := trimEOL(raw[start:])
		if len(l) == 0 {
			raw = raw[:start]
			break
		}
		raw = append(raw[:start+len(l)], '\n')
		n++
	}
	if n == 0 {
		return nil
	}
	s := string(raw)
	vals := make([]string, n)
	for i := 0; s != ""; i++ {
		j := 0
		for j < len(s) && s[j] != '\n' {
			j++
		}
		f := s[:j]
		s = s[j+1:]
		if f[0] == ' ' || f[0] == '\t' {
			return fmt.Errorf("%w: obsolete line folding", errMalformed)
		}
		colon := -1
		for k := 0; k < len(f); k++ {
			if f[k] == ':' {
				colon = k
				break
			}
			if !wire.IsTokenChar(f[k]) {
				return fmt.Errorf("%w: header field name %q", errMalformed, clipS(f))
			}
		}
		if colon <= 0 {
			return fmt.Errorf("%w: header line %q", errMalformed, clipS(f))
		}
		v := wire.TrimOWS(f[colon+1:])
		for k := 0; k < len(v); k++ {
			if c := v[k]; (c < ' ' && c != '\t') || c == 0x7f {
				return fmt.Errorf("%w: header %s value", errMalformed, clipS(f[:colon]))
			}
		}
		key := wire.CanonicalKey(f[:colon])
		vals[i] = v
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = vals[i : i+1 : i+1]
		}
	}
	return nil
}

func clipS(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// parseContentLength accepts one or more identical decimal values.
func parseContentLength(vv []string) (int64, bool) {
	var n int64 = -1
	for _, v := range vv {
		for v != "" {
			var t string
			t, v, _ = wire.CutComma(v)
			if t == "" || len(t) > 18 {
				return 0, false
			}
			var x int64
			for i := 0; i < len(t); i++ {
				if t[i] < '0' || t[i] > '9' {
					return 0, false
				}
				x = x*10 + int64(t[i]-'0')
			}
			if n >= 0 && x != n {
				return 0, false
			}
			n = x
		}
	}
	return n, n >= 0
}

// Release ends the exchange: the connection goes back to the pool when the
// body was read to its end and nothing prevents reuse, else it is closed.
func (resp *Response) Release() {
	bc := resp.bc
	bc.ctx = nil
	if resp.reuse && resp.Body.done && bc.br.Buffered() == 0 {
		// Deadlines are set again by the next exchange.
		bc.pool.put(bc, time.Now())
		return
	}
	_ = bc.nc.Close()
}

// Body reads a response body framed by Content-Length, chunked
// encoding (its trailer fields go to trailer) or the end of the connection.
type Body struct {
	br      *bufio.Reader
	left    int64 // Content-Length bytes left, or bytes left in the chunk
	chunked bool
	close   bool // until the connection closes
	done    bool // read to the end
	trailer http.Header
	err     error
}

// Trailer is the trailer section of a chunked body, once read to its end.
func (b *Body) Trailer() http.Header { return b.trailer }

func (b *Body) init(br *bufio.Reader, n int64, chunked bool) {
	*b = Body{br: br, left: n, chunked: chunked, close: n < 0 && !chunked}
	if chunked {
		b.left = 0
	}
	if n == 0 && !chunked {
		b.done = true
	}
}

func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return 0, io.EOF
	}
	switch {
	case b.close:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true
		}
		return n, err
	case !b.chunked:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.done = true
			return n, nil
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			b.err = err
		}
		return n, err
	}
	if b.left == 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
		return n, err
	}
	if b.left == 0 {
		if err := b.chunkEnd(); err != nil {
			b.err = err
			return n, nil // the error comes with the next Read
		}
	}
	return n, nil
}

// chunkEnd consumes the CRLF after a chunk's data.
func (b *Body) chunkEnd() error {
	c, err := b.br.ReadByte()
	if err == nil && c == '\r' {
		c, err = b.br.ReadByte()
	}
	if err != nil {
		return eofUnexpected(err)
	}
	if c != '\n' {
		return fmt.Errorf("%w: chunk not followed by CRLF", errMalformed)
	}
	return nil
}

func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// nextChunk reads a chunk-size line; at the last chunk it reads the trailer
// section and marks the body done.
func (b *Body) nextChunk() error {
	line, err := b.br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("%w: chunk size line too long", errMalformed)
		}
		return eofUnexpected(err)
	}
	line = trimEOL(line)
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto end
		}
		if i >= 15 {
			return fmt.Errorf("%w: chunk size too large", errMalformed)
		}
		n = n<<4 | int64(d)
	}
end:
	if i == 0 {
		return fmt.Errorf("%w: chunk size %q", errMalformed, clip(line))
	}
	if rest := line[i:]; len(rest) > 0 && rest[0] != ';' && rest[0] != ' ' && rest[0] != '\t' {
		return fmt.Errorf("%w: chunk size %q", errMalformed, clip(line))
	}
	if n > 0 {
		b.left = n
		return nil
	}
	// Last chunk: trailer fields, then the empty line.
	b.trailer = make(http.Header)
	if err := readFields(b.br, b.trailer, 0); err != nil {
		return err
	}
	b.done = true
	return nil
}

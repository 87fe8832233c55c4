package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON object per request:
//
//	{"time":"2026-01-02T15:04:05.000Z","request_id":"...","client":"198.51.100.7",
//	 "method":"GET","host":"example.com","path":"/x","proto":"HTTP/1.1",
//	 "route":"api","backend":"198.51.100.10:8080","status":200,"bytes":512,
//	 "duration_ms":1.234}
//
// backend is empty when no backend was involved. Lines are built in pooled
// buffers and collected in a 64 KiB buffer that is written when full and
// at least every accessLogFlush, so a busy proxy makes one write call per
// many requests; a crash loses at most that much of the log.
type accessLog struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closer io.Closer
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

const accessLogFlush = 200 * time.Millisecond

func openAccessLog(path string) (*accessLog, error) {
	var out io.Writer
	var closer io.Closer
	switch path {
	case "stdout":
		out = os.Stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open access log: %w", err)
		}
		out, closer = f, f
	}
	a := &accessLog{w: bufio.NewWriterSize(out, 64<<10), closer: closer, stop: make(chan struct{}), done: make(chan struct{})}
	go a.flusher()
	return a, nil
}

func (a *accessLog) flusher() {
	defer close(a.done)
	t := time.NewTicker(accessLogFlush)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			if a.w.Buffered() > 0 {
				_ = a.w.Flush()
			}
			a.mu.Unlock()
		}
	}
}

// close flushes and closes the log; later calls do nothing.
func (a *accessLog) close() {
	first := false
	a.once.Do(func() { first = true })
	if !first {
		return
	}
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.w.Flush()
	if a.closer != nil {
		_ = a.closer.Close()
	}
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (a *accessLog) write(e *exchange, r *http.Request, end time.Time) {
	bp := lineBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = end.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","request_id":`...)
	b = appendJSON(b, e.reqID)
	b = append(b, `,"client":"`...)
	if e.client.IsValid() {
		b = e.client.AppendTo(b)
	}
	b = append(b, `","method":`...)
	b = appendJSON(b, r.Method)
	b = append(b, `,"host":`...)
	b = appendJSON(b, r.Host)
	b = append(b, `,"path":`...)
	b = appendJSON(b, e.origPath)
	b = append(b, `,"proto":`...)
	b = appendJSON(b, r.Proto)
	b = append(b, `,"route":`...)
	if e.route != nil {
		b = appendJSON(b, e.route.name)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"backend":`...)
	if e.backend != nil {
		b = appendJSON(b, e.backend.ID)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(end.Sub(e.start).Microseconds())/1000, 'f', 3, 64)
	b = append(b, "}\n"...)
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
	*bp = b
	lineBuffers.Put(bp)
}

const hexDigits = "0123456789abcdef"

// appendJSON appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSON(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

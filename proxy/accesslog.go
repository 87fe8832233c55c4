package proxy

import (
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
// buffers and written with one write call each.
type accessLog struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
}

func openAccessLog(path string) (*accessLog, error) {
	switch path {
	case "stdout":
		return &accessLog{w: os.Stdout}, nil
	case "stderr":
		return &accessLog{w: os.Stderr}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open access log: %w", err)
	}
	return &accessLog{w: f, closer: f}, nil
}

func (a *accessLog) close() {
	if a.closer != nil {
		a.mu.Lock()
		_ = a.closer.Close()
		a.mu.Unlock()
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

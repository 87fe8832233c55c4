// Package wire holds the HTTP/1.1 header and framing helpers that both
// sides of the proxy share: the client-facing server (proxy/internal/h1),
// the backend client (proxy/internal/upstream), config validation and the
// forwarding code. One canonicaliser, one token test, one list of
// hop-by-hop headers, so the two sides cannot disagree on what a header is.
package wire

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
)

// IsTokenChar reports whether c may appear in a token (RFC 9110 5.6.2).
func IsTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// ValidHeaderName reports whether s is a field name: a token (RFC 9110).
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// CanonicalKey is http.CanonicalHeaderKey of a valid token, without
// allocating when the name is already canonical.
func CanonicalKey(s string) string {
	upper := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if upper && c >= 'a' && c <= 'z' || !upper && c >= 'A' && c <= 'Z' {
			return http.CanonicalHeaderKey(s)
		}
		upper = c == '-'
	}
	return s
}

// HopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), plus the proxy
// variants clients still send, in canonical form.
var HopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// IsHopHeader reports whether the canonical name k is one of HopHeaders.
func IsHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// TrimOWS trims optional whitespace (spaces and tabs) at both ends.
func TrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// CutComma returns the first element of a comma-separated list, trimmed,
// and the rest.
func CutComma(v string) (tok, rest string, found bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			return TrimOWS(v[:i]), v[i+1:], true
		}
	}
	return TrimOWS(v), "", false
}

// TokenListHas reports whether a comma-separated header value list holds
// token, case-insensitively, without allocating.
func TokenListHas(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// EqualFoldASCII compares two strings ASCII case-insensitively.
func EqualFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// WriteValue writes a header value with any CR or LF (which net/http
// rejects on the way in, but a header op could hold) replaced by a space.
func WriteValue(bw *bufio.Writer, v string) {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			b := []byte(v)
			for j := i; j < len(b); j++ {
				if b[j] == '\r' || b[j] == '\n' {
					b[j] = ' '
				}
			}
			_, _ = bw.Write(b)
			return
		}
	}
	_, _ = bw.WriteString(v)
}

// WriteUint writes n in base into bw's free space, without allocating
// (a full buffer is flushed first; an error stays in bw).
func WriteUint(bw *bufio.Writer, n uint64, base int) {
	if bw.Available() < 20 {
		_ = bw.Flush()
	}
	_, _ = bw.Write(strconv.AppendUint(bw.AvailableBuffer(), n, base))
}

// BufferSize is the size of the pooled body copy buffers.
const BufferSize = 32 << 10

// Buffers lends *[]byte copy buffers of BufferSize for streaming bodies,
// shared by both directions.
var Buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

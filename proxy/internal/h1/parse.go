package h1

import (
	"net/http"
	"net/url"

	"github.com/xlb-project/xlb/proxy/internal/wire"
)

// parse fills c.req from a request head; false when the head is not one
// the lean path serves (see the top of this file).
func (c *conn) parse(head []byte) bool {
	// Only CRLF line ends, no other control characters but tab.
	for i, b := range head {
		switch {
		case b == '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
		case b == '\n':
			if i == 0 || head[i-1] != '\r' {
				return false
			}
		case b == '\t', b >= ' ' && b < 0x7f:
		default:
			return false
		}
	}
	str := string(head) // one string per head; values share it
	line, rest, _ := cutCRLF(str)
	sp := 0
	for sp < len(line) && wire.IsTokenChar(line[sp]) {
		sp++
	}
	if sp == 0 || sp >= len(line) || line[sp] != ' ' {
		return false
	}
	method := line[:sp]
	line = line[sp+1:]
	sp = 0
	for sp < len(line) && line[sp] != ' ' && line[sp] != '\t' && line[sp] != '#' {
		sp++
	}
	target := line[:sp]
	if len(target) == 0 || target[0] != '/' || line[sp:] != " HTTP/1.1" {
		return false
	}
	u := &c.url
	if !simpleTarget(target, u) {
		var err error
		if u, err = url.ParseRequestURI(target); err != nil {
			return false
		}
	}
	h := c.hdr
	n := 0
	for r := rest; r != "\r\n"; {
		_, r, _ = cutCRLF(r)
		n++
	}
	if cap(c.vals) < n {
		c.vals = make([]string, n)
	}
	vals := c.vals[:n]
	host, hosts := "", 0
	for i := 0; rest != "\r\n"; i++ {
		var f string
		f, rest, _ = cutCRLF(rest)
		if f[0] == ' ' || f[0] == '\t' {
			return false // obsolete line folding
		}
		colon := 0
		for colon < len(f) && wire.IsTokenChar(f[colon]) {
			colon++
		}
		if colon == 0 || colon >= len(f) || f[colon] != ':' {
			return false
		}
		key := wire.CanonicalKey(f[:colon])
		v := wire.TrimOWS(f[colon+1:])
		switch key {
		case "Host":
			host = v
			hosts++
			continue
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings":
			return false
		}
		vals[i] = v
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = vals[i : i+1 : i+1]
		}
	}
	if hosts != 1 || !simpleHost(host) {
		return false
	}
	if pv := h["Pragma"]; len(pv) > 0 && pv[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = noCache[:1:1]
		}
	}
	c.req = c.base
	r := &c.req
	r.Method = method
	r.URL = u
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h
	r.Body = http.NoBody
	r.Host = host
	r.RequestURI = target
	r.RemoteAddr = c.remote
	r.Close = wire.TokenListHas(h["Connection"], "close")
	return true
}

var noCache = []string{"no-cache"}

// simpleTarget sets u to what url.ParseRequestURI makes of an origin-form
// target whose path holds only characters that need no escaping (letters,
// digits, "-._~$&+,/:;=@"), and reports whether it was one.
func simpleTarget(target string, u *url.URL) bool {
	path, query, hasQuery := target, "", false
	for i := 0; i < len(target); i++ {
		c := target[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			continue
		}
		switch c {
		case '-', '.', '_', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
			continue
		case '?':
			path, query, hasQuery = target[:i], target[i+1:], true
		default:
			return false
		}
		break
	}
	if len(path) > 1 && path[1] == '/' {
		return false // "//...": left to net/url
	}
	*u = url.URL{Path: path, RawQuery: query}
	u.ForceQuery = hasQuery && query == "" // "/a?" (the only '?' is last)
	return true
}

func cutCRLF(s string) (line, rest string, ok bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '\r' && s[i+1] == '\n' {
			return s[:i], s[i+2:], true
		}
	}
	return s, "", false
}

// simpleHost accepts a non-empty host[:port] of letters, digits and
// ".-_:[]"; anything else is left to net/http.
func simpleHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

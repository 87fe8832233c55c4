// Package pathnorm normalises request paths before routing, so that a rule
// on a path prefix cannot be passed by spelling the path another way
// (/x/../admin, //admin, /public/%2e%2e/admin) that the backend would
// resolve to the same resource.
//
// The normal form of an escaped path (RFC 3986 6.2.2): percent-encoded
// unreserved characters (letters, digits, "-._~") are decoded, the other
// percent-encodings get upper-case hex digits, dot segments are removed
// (section 5.2.4; ".." at the root stays at the root), and, optionally,
// runs of slashes become one. An encoded slash or backslash (%2F, %5C) or
// a raw backslash inside a segment cannot be normalised safely — backends
// disagree on whether it separates segments — so by default it is refused.
package pathnorm

import (
	"errors"
	"strings"
)

// Options says how to normalise.
type Options struct {
	// MergeSlashes turns runs of "/" into one.
	MergeSlashes bool
	// KeepEncodedSlashes passes %2F, %5C and "\" through inside a segment
	// instead of refusing the path.
	KeepEncodedSlashes bool
}

// Errors of Normalize.
var (
	// ErrEncodedSlash: the path holds %2F, %5C or "\" and Options do not
	// keep them.
	ErrEncodedSlash = errors.New(`path holds an encoded "/" or "\" (or a raw "\") in a segment`)
	// ErrBadEscape: a "%" not followed by two hex digits.
	ErrBadEscape = errors.New("path holds a malformed percent-encoding")
)

// Normalize returns the normal form of the escaped path p. A p that does
// not start with "/" (such as "*") is returned as it is. The result is p
// itself, not a copy, when p is already normal.
func Normalize(p string, o Options) (string, error) {
	if !strings.HasPrefix(p, "/") || isNormal(p, o) {
		return p, nil
	}
	dec, err := decodeUnreserved(p, o)
	if err != nil {
		return "", err
	}
	return removeDotSegments(dec, o.MergeSlashes), nil
}

// isNormal reports whether p needs no change: no "%", no "\", no dot
// segment and (when merging) no empty segment.
func isNormal(p string, o Options) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', '\\':
			return false
		case '/':
			rest := p[i+1:]
			if o.MergeSlashes && strings.HasPrefix(rest, "/") {
				return false
			}
			seg := rest
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				seg = rest[:j]
			}
			if seg == "." || seg == ".." {
				return false
			}
		}
	}
	return true
}

func unreserved(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

// decodeUnreserved decodes the percent-encoded unreserved characters of p
// and upper-cases the hex digits of the other encodings.
func decodeUnreserved(p string, o Options) (string, error) {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '\\' && !o.KeepEncodedSlashes {
			return "", ErrEncodedSlash
		}
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) {
			return "", ErrBadEscape
		}
		hi, ok1 := unhex(p[i+1])
		lo, ok2 := unhex(p[i+2])
		if !ok1 || !ok2 {
			return "", ErrBadEscape
		}
		v := hi<<4 | lo
		switch {
		case unreserved(v):
			b.WriteByte(v)
		case (v == '/' || v == '\\') && !o.KeepEncodedSlashes:
			return "", ErrEncodedSlash
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[v>>4])
			b.WriteByte(upperHex[v&15])
		}
		i += 2
	}
	return b.String(), nil
}

// removeDotSegments resolves "." and ".." segments of a path starting with
// "/" (RFC 3986 5.2.4) and, with merge, drops empty segments but a final
// one.
func removeDotSegments(p string, merge bool) string {
	segs := make([]string, 0, strings.Count(p, "/"))
	rest := p[1:]
	trailing := false
	for {
		seg, tail, more := strings.Cut(rest, "/")
		last := !more
		switch {
		case seg == ".":
			trailing = last
		case seg == "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
			trailing = last
		case seg == "" && last:
			trailing = true
		case seg == "" && merge:
		default:
			segs = append(segs, seg)
			trailing = false
		}
		if last {
			break
		}
		rest = tail
	}
	if len(segs) == 0 {
		return "/"
	}
	out := "/" + strings.Join(segs, "/")
	if trailing {
		out += "/"
	}
	return out
}

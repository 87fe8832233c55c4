// Package sticky encodes and checks the cookie that keeps a client on one
// backend of an L7 pool.
//
// The cookie value is
//
//	base64url(version ‖ expiry ‖ backend ID) "." base64url(HMAC-SHA256(key, version ‖ expiry ‖ backend ID))
//
// with version one byte (1), expiry the Unix time in seconds as 8 bytes big
// endian, and the backend ID (its host:port) as bytes. The first key signs,
// every key verifies, so keys rotate by prepending the new one and dropping
// the oldest once its cookies have expired. A client cannot make a value the
// proxy accepts without a key, so it cannot point itself at a backend of its
// choosing; a value that is malformed, tampered with, signed by no current key
// or expired is refused and the request falls back to normal selection. The
// backend ID is readable by the client (it is signed, not encrypted); the
// caller checks that it names a backend of the pool.
package sticky

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	version = 1
	// MinKeyLen is the shortest key NewCodec accepts, in bytes.
	MinKeyLen = 32
	// headerLen is version + expiry.
	headerLen = 1 + 8
	// maxPayload bounds a decoded payload: header and a backend ID of up to
	// 512 bytes.
	maxPayload = headerLen + 512
)

var b64 = base64.RawURLEncoding

// Errors NewCodec and Config.Validate return, wrapped with the field and value.
var (
	ErrKey    = errors.New("invalid sticky cookie key")
	ErrConfig = errors.New("invalid sticky cookie setting")
)

// Codec signs and verifies cookie values. It is safe for concurrent use.
type Codec struct {
	keys [][]byte
	macs []sync.Pool // per key: hash.Hash (keyed HMAC-SHA256), reused
	ttl  time.Duration
}

// NewCodec returns a codec whose first key signs and whose keys all verify;
// values expire ttl after Encode. Each key is at least MinKeyLen bytes.
func NewCodec(keys [][]byte, ttl time.Duration) (*Codec, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: keys is empty: want at least one key of %d or more bytes", ErrKey, MinKeyLen)
	}
	c := &Codec{ttl: ttl}
	for i, k := range keys {
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("%w: keys[%d] has %d bytes: want %d or more", ErrKey, i, len(k), MinKeyLen)
		}
		c.keys = append(c.keys, append([]byte(nil), k...))
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("%w: ttl %v: want 1s or more", ErrConfig, ttl)
	}
	c.macs = make([]sync.Pool, len(c.keys))
	for i, k := range c.keys {
		c.macs[i].New = func() any { return hmac.New(sha256.New, k) }
	}
	return c, nil
}

// Encode returns the cookie value naming backendID, valid until now + ttl.
// Decode refuses IDs longer than 512 bytes (no host:port is that long).
func (c *Codec) Encode(backendID string, now time.Time) string {
	payload := make([]byte, headerLen+len(backendID))
	payload[0] = version
	binary.BigEndian.PutUint64(payload[1:headerLen], uint64(now.Add(c.ttl).Unix()))
	copy(payload[headerLen:], backendID)
	var sum [sha256.Size]byte
	mac := c.sign(0, payload, sum[:0])
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(mac)
}

// Decode returns the backend ID a value names, and ok = false when the value is
// malformed, tampered with, signed by none of the keys or expired at now.
func (c *Codec) Decode(value string, now time.Time) (backendID string, ok bool) {
	p, m, found := strings.Cut(value, ".")
	if !found || b64.DecodedLen(len(p)) > maxPayload || b64.DecodedLen(len(m)) != sha256.Size {
		return "", false
	}
	var pbuf [maxPayload]byte
	n, err := b64.Decode(pbuf[:], []byte(p))
	payload := pbuf[:n]
	if err != nil || len(payload) <= headerLen || payload[0] != version {
		return "", false
	}
	var mbuf [sha256.Size]byte
	if n, err := b64.Decode(mbuf[:], []byte(m)); err != nil || n != sha256.Size {
		return "", false
	}
	valid := false
	var sum [sha256.Size]byte
	for i := range c.keys {
		if hmac.Equal(mbuf[:], c.sign(i, payload, sum[:0])) {
			valid = true
			break
		}
	}
	if !valid {
		return "", false
	}
	expiry := int64(binary.BigEndian.Uint64(payload[1:headerLen]))
	if now.Unix() >= expiry {
		return "", false
	}
	return string(payload[headerLen:]), true
}

// DecodeKnown is Decode that also refuses a backend ID for which known
// returns false (a backend no longer, or never, in the pool).
func (c *Codec) DecodeKnown(value string, now time.Time, known func(backendID string) bool) (backendID string, ok bool) {
	id, ok := c.Decode(value, now)
	if !ok || !known(id) {
		return "", false
	}
	return id, true
}

// sign appends the MAC of payload under keys[i] to dst.
func (c *Codec) sign(i int, payload, dst []byte) []byte {
	h := c.macs[i].Get().(hash.Hash)
	h.Reset()
	h.Write(payload)
	dst = h.Sum(dst)
	c.macs[i].Put(h)
	return dst
}

// Config holds the cookie's attributes.
type Config struct {
	// Name of the cookie. Default "xlb_sticky".
	Name string
	// TTL is how long a cookie keeps the client on its backend; also the
	// cookie's Max-Age. Default 1h.
	TTL time.Duration
	// Path of the cookie. Default "/".
	Path string
	// Secure sends the cookie over HTTPS only. Default false.
	Secure bool
	// HTTPOnly hides the cookie from scripts. Default false (the zero value);
	// configs usually set it.
	HTTPOnly bool
	// SameSite is "lax", "strict", "none" or "" (attribute left out).
	// Default "" ; "none" requires Secure.
	SameSite string
}

// Defaults for Config.
const (
	DefaultName = "xlb_sticky"
	DefaultTTL  = time.Hour
	DefaultPath = "/"
)

// WithDefaults returns c with the empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	return c
}

// Validate checks the fields after defaults; errors name the field and value.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if !validName(c.Name) {
		return fmt.Errorf("%w: name %q: want a cookie name (letters, digits and !#$%%&'*+-.^_`|~)", ErrConfig, c.Name)
	}
	if c.TTL < time.Second {
		return fmt.Errorf("%w: ttl %v: want 1s or more", ErrConfig, c.TTL)
	}
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, ";\r\n") {
		return fmt.Errorf("%w: path %q: want an absolute path without ';'", ErrConfig, c.Path)
	}
	switch c.SameSite {
	case "", "lax", "strict":
	case "none":
		if !c.Secure {
			return fmt.Errorf("%w: same_site %q needs secure: true (browsers refuse SameSite=None without Secure)", ErrConfig, c.SameSite)
		}
	default:
		return fmt.Errorf("%w: same_site %q: allowed lax, strict, none or empty", ErrConfig, c.SameSite)
	}
	return nil
}

// Cookie returns the cookie to set with the given value (from Codec.Encode).
func (c Config) Cookie(value string) *http.Cookie {
	c = c.WithDefaults()
	ck := &http.Cookie{
		Name:     c.Name,
		Value:    value,
		Path:     c.Path,
		MaxAge:   int(c.TTL / time.Second),
		Secure:   c.Secure,
		HttpOnly: c.HTTPOnly,
	}
	switch c.SameSite {
	case "lax":
		ck.SameSite = http.SameSiteLaxMode
	case "strict":
		ck.SameSite = http.SameSiteStrictMode
	case "none":
		ck.SameSite = http.SameSiteNoneMode
	}
	return ck
}

// Value returns the value of the configured cookie in r, or "" when absent.
func (c Config) Value(r *http.Request) string {
	ck, err := r.Cookie(c.WithDefaults().Name)
	if err != nil {
		return ""
	}
	return ck.Value
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0:
		default:
			return false
		}
	}
	return true
}

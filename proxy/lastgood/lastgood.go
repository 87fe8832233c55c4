// Package lastgood keeps the last good response to recent GET requests of a
// route, in a small bounded cache, so that a route whose pool has no usable
// backend can still answer GET and HEAD with what it answered last (marked
// with a header), instead of an error.
//
// It is not an HTTP cache: nothing is served from it while the pool can
// answer. Only complete 200 responses up to MaxBodyBytes are kept, and none
// that is private to a user (Set-Cookie, Cache-Control private or no-store,
// a request with Authorization or Cookie). Entries are evicted least
// recently used beyond MaxEntries or MaxBytes, and never served after MaxAge.
package lastgood

import (
	"container/list"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults for Config.
const (
	DefaultMaxEntries   = 1000
	DefaultMaxBytes     = 16 << 20
	DefaultMaxBodyBytes = 256 << 10
	DefaultMaxAge       = 5 * time.Minute
)

// ErrConfig is returned, wrapped with the field and value, for a bad Config.
var ErrConfig = errors.New("invalid last-good cache setting")

// Config bounds a Cache. Zero fields take their defaults.
type Config struct {
	// MaxEntries is the most responses kept. Default 1000.
	MaxEntries int
	// MaxBytes bounds the bodies and headers kept, together. Default 16 MiB.
	MaxBytes int64
	// MaxBodyBytes is the largest body kept. Default 256 KiB.
	MaxBodyBytes int64
	// MaxAge is how long an entry may be served after it was stored.
	// Default 5m.
	MaxAge time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	return c
}

// Validate checks a config with its defaults applied; field names are the
// proxy's YAML keys.
func (c Config) Validate() error {
	switch {
	case c.MaxEntries < 1 || c.MaxEntries > 1_000_000:
		return fmt.Errorf("%w: max_entries %d: allowed 1 to 1000000", ErrConfig, c.MaxEntries)
	case c.MaxBytes < 1 || c.MaxBytes > 1<<30:
		return fmt.Errorf("%w: max_bytes %d: allowed 1 to 1 GiB", ErrConfig, c.MaxBytes)
	case c.MaxBodyBytes < 1 || c.MaxBodyBytes > c.MaxBytes:
		return fmt.Errorf("%w: max_body_bytes %d: allowed 1 to max_bytes (%d)", ErrConfig, c.MaxBodyBytes, c.MaxBytes)
	case c.MaxAge < time.Second:
		return fmt.Errorf("%w: max_age %v: allowed 1s or more", ErrConfig, c.MaxAge)
	}
	return nil
}

// Entry is one kept response.
type Entry struct {
	Status int
	Header http.Header
	Body   []byte
	Stored time.Time
}

func (e *Entry) size() int64 {
	n := int64(len(e.Body)) + 64
	for k, vv := range e.Header {
		n += int64(len(k))
		for _, v := range vv {
			n += int64(len(v)) + 16
		}
	}
	return n
}

type item struct {
	key   string
	entry Entry
	size  int64
}

// Cache is a bounded LRU of last good responses, safe for concurrent use.
type Cache struct {
	cfg   Config
	mu    sync.Mutex
	items map[string]*list.Element
	lru   list.List // front: most recently used
	bytes int64
}

// New returns an empty cache.
func New(cfg Config) (*Cache, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Cache{cfg: cfg, items: make(map[string]*list.Element)}, nil
}

// MaxBodyBytes is the largest body Put keeps, for callers that capture one.
func (c *Cache) MaxBodyBytes() int64 { return c.cfg.MaxBodyBytes }

// Key is the cache key of a request: GET and HEAD of the same host and
// request URI share it.
func Key(host, requestURI string) string {
	return host + " " + requestURI
}

// Storable reports whether a response may be kept: a GET answered 200,
// and nothing in either header says it is private to one user.
func Storable(method string, reqHeader http.Header, status int, respHeader http.Header) bool {
	if method != http.MethodGet || status != http.StatusOK {
		return false
	}
	if _, ok := reqHeader["Authorization"]; ok {
		return false
	}
	if _, ok := reqHeader["Cookie"]; ok {
		return false
	}
	if _, ok := respHeader["Set-Cookie"]; ok {
		return false
	}
	for _, v := range respHeader["Cache-Control"] {
		v = strings.ToLower(v)
		if strings.Contains(v, "no-store") || strings.Contains(v, "private") {
			return false
		}
	}
	return true
}

// Put keeps a copy of a response under key, replacing the one before. A body
// longer than MaxBodyBytes is not kept.
func (c *Cache) Put(key string, status int, header http.Header, body []byte, now time.Time) {
	if int64(len(body)) > c.cfg.MaxBodyBytes {
		return
	}
	e := Entry{Status: status, Header: header.Clone(), Body: append([]byte(nil), body...), Stored: now}
	it := &item{key: key, entry: e, size: e.size() + int64(len(key))}
	if it.size > c.cfg.MaxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	c.items[key] = c.lru.PushFront(it)
	c.bytes += it.size
	for len(c.items) > c.cfg.MaxEntries || c.bytes > c.cfg.MaxBytes {
		c.remove(c.lru.Back())
	}
}

func (c *Cache) remove(el *list.Element) {
	it := c.lru.Remove(el).(*item)
	delete(c.items, it.key)
	c.bytes -= it.size
}

// Get returns the entry under key if it is younger than MaxAge. The entry's
// header and body are shared: callers must not change them.
func (c *Cache) Get(key string, now time.Time) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return Entry{}, false
	}
	it := el.Value.(*item)
	if now.Sub(it.entry.Stored) > c.cfg.MaxAge {
		c.remove(el)
		return Entry{}, false
	}
	c.lru.MoveToFront(el)
	return it.entry, true
}

// Len returns the number of entries and their size in bytes.
func (c *Cache) Len() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.bytes
}

// Capture collects a response body as it is written, up to a limit.
type Capture struct {
	limit    int64
	buf      []byte
	overflow bool
}

// NewCapture returns a capture of at most limit bytes.
func NewCapture(limit int64) *Capture { return &Capture{limit: limit} }

// Write keeps p while the total stays within the limit.
func (c *Capture) Write(p []byte) {
	if c.overflow {
		return
	}
	if int64(len(c.buf)+len(p)) > c.limit {
		c.overflow, c.buf = true, nil
		return
	}
	c.buf = append(c.buf, p...)
}

// Body returns what was written, and false when it went over the limit.
func (c *Capture) Body() ([]byte, bool) { return c.buf, !c.overflow }

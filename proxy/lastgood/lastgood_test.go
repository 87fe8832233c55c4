package lastgood

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func TestPutGetCopies(t *testing.T) {
	c, _ := New(Config{})
	h := http.Header{"Content-Type": {"text/plain"}}
	body := []byte("hello")
	c.Put("k", 200, h, body, t0)
	body[0] = 'j'
	h.Set("Content-Type", "changed")
	e, ok := c.Get("k", t0.Add(time.Second))
	if !ok || string(e.Body) != "hello" || e.Header.Get("Content-Type") != "text/plain" || e.Status != 200 {
		t.Fatalf("got %+v %v, want the response as it was put", e, ok)
	}
}

func TestMaxAge(t *testing.T) {
	c, _ := New(Config{MaxAge: time.Minute})
	c.Put("k", 200, nil, []byte("x"), t0)
	if _, ok := c.Get("k", t0.Add(time.Minute)); !ok {
		t.Fatal("entry gone at max_age")
	}
	if _, ok := c.Get("k", t0.Add(time.Minute+1)); ok {
		t.Fatal("entry served after max_age")
	}
	if n, _ := c.Len(); n != 0 {
		t.Fatal("expired entry kept")
	}
}

func TestBoundsAndLRU(t *testing.T) {
	c, _ := New(Config{MaxEntries: 3})
	for i := range 3 {
		c.Put(fmt.Sprint(i), 200, nil, []byte("x"), t0)
	}
	c.Get("0", t0) // 0 is now the most recent; 1 the least
	c.Put("3", 200, nil, []byte("x"), t0)
	if _, ok := c.Get("1", t0); ok {
		t.Fatal("least recently used entry not evicted")
	}
	for _, k := range []string{"0", "2", "3"} {
		if _, ok := c.Get(k, t0); !ok {
			t.Fatalf("entry %s evicted", k)
		}
	}
	// Bytes bound.
	c, _ = New(Config{MaxBytes: 1000, MaxBodyBytes: 400})
	for i := range 10 {
		c.Put(fmt.Sprint(i), 200, nil, []byte(strings.Repeat("x", 300)), t0)
		if _, b := c.Len(); b > 1000 {
			t.Fatalf("cache holds %d bytes, bound 1000", b)
		}
	}
	if n, _ := c.Len(); n != 2 {
		t.Fatalf("%d entries of ~370 bytes in 1000, want 2", n)
	}
	c.Put("big", 200, nil, make([]byte, 401), t0)
	if _, ok := c.Get("big", t0); ok {
		t.Fatal("body over max_body_bytes kept")
	}
}

func TestStorable(t *testing.T) {
	ok := http.Header{}
	for _, c := range []struct {
		method string
		req    http.Header
		status int
		resp   http.Header
		want   bool
	}{
		{"GET", ok, 200, ok, true},
		{"HEAD", ok, 200, ok, false},
		{"POST", ok, 200, ok, false},
		{"GET", ok, 503, ok, false},
		{"GET", http.Header{"Authorization": {"x"}}, 200, ok, false},
		{"GET", http.Header{"Cookie": {"a=b"}}, 200, ok, false},
		{"GET", ok, 200, http.Header{"Set-Cookie": {"a=b"}}, false},
		{"GET", ok, 200, http.Header{"Cache-Control": {"Private, max-age=10"}}, false},
		{"GET", ok, 200, http.Header{"Cache-Control": {"no-store"}}, false},
		{"GET", ok, 200, http.Header{"Cache-Control": {"max-age=10"}}, true},
	} {
		if got := Storable(c.method, c.req, c.status, c.resp); got != c.want {
			t.Errorf("%s %v %d %v: %v, want %v", c.method, c.req, c.status, c.resp, got, c.want)
		}
	}
}

func TestCapture(t *testing.T) {
	c := NewCapture(5)
	c.Write([]byte("ab"))
	c.Write([]byte("cde"))
	if b, ok := c.Body(); !ok || string(b) != "abcde" {
		t.Fatalf("%q %v", b, ok)
	}
	c.Write([]byte("f"))
	if _, ok := c.Body(); ok {
		t.Fatal("over the limit still complete")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxEntries: -1}, "max_entries -1"},
		{Config{MaxBytes: -1}, "max_bytes -1"},
		{Config{MaxBytes: 10, MaxBodyBytes: 20}, "max_body_bytes 20"},
		{Config{MaxAge: time.Millisecond}, "max_age 1ms"},
	} {
		if _, err := New(c.cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.cfg, err, c.want)
		}
	}
}

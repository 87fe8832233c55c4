package sticky

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var (
	keyA = bytes.Repeat([]byte("a"), 32)
	keyB = bytes.Repeat([]byte("b"), 32)
	keyC = bytes.Repeat([]byte("c"), 32)
	t0   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func mustCodec(t *testing.T, ttl time.Duration, keys ...[]byte) *Codec {
	t.Helper()
	c, err := NewCodec(keys, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	c := mustCodec(t, time.Hour, keyA)
	for _, id := range []string{"198.51.100.10:8080", "[2001:db8:1::5]:443", "backend.example:80"} {
		v := c.Encode(id, t0)
		if strings.Contains(v, id) {
			// base64: the ID is not in clear text in the header, though
			// anyone can decode it.
			t.Errorf("value %q contains the raw id", v)
		}
		if got, ok := c.Decode(v, t0.Add(59*time.Minute)); !ok || got != id {
			t.Errorf("Decode(Encode(%q)) = %q, %v", id, got, ok)
		}
	}
}

func TestRefused(t *testing.T) {
	c := mustCodec(t, time.Hour, keyA)
	good := c.Encode("198.51.100.10:80", t0)
	payload, mac, _ := strings.Cut(good, ".")
	forgedPayload := func(id string) string {
		// A client re-encodes the payload with another backend and keeps
		// the old signature.
		other := c.Encode(id, t0)
		p, _, _ := strings.Cut(other, ".")
		return p + "." + mac
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	otherKey := mustCodec(t, time.Hour, keyB).Encode("198.51.100.10:80", t0)
	tests := []struct {
		name  string
		value string
		now   time.Time
	}{
		{"expired", good, t0.Add(time.Hour)},
		{"long expired", good, t0.Add(48 * time.Hour)},
		{"payload bit flipped", flip(payload, 3) + "." + mac, t0},
		{"mac bit flipped", payload + "." + flip(mac, 5), t0},
		{"other backend, old mac", forgedPayload("198.51.100.11:80"), t0},
		{"signed with an unknown key", otherKey, t0},
		{"no mac", payload, t0},
		{"empty mac", payload + ".", t0},
		{"short mac", payload + "." + mac[:20], t0},
		{"empty", "", t0},
		{"garbage", "!!!.???", t0},
		{"plain backend id", "198.51.100.10:80", t0},
		{"oversized id", c.Encode(strings.Repeat("x", 600), t0), t0},
		{"oversized value", strings.Repeat("A", 5000) + "." + mac, t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, ok := c.Decode(tt.value, tt.now); ok {
				t.Errorf("Decode(%q) accepted, backend %q", tt.value, id)
			}
		})
	}
	if _, ok := c.Decode(good, t0); !ok {
		t.Fatal("the untouched value was refused")
	}
}

func TestRotation(t *testing.T) {
	old := mustCodec(t, time.Hour, keyA)
	rotated := mustCodec(t, time.Hour, keyB, keyA) // new key first, old still verifies
	dropped := mustCodec(t, time.Hour, keyC, keyB) // old key gone

	v1 := old.Encode("198.51.100.10:80", t0)
	if id, ok := rotated.Decode(v1, t0); !ok || id != "198.51.100.10:80" {
		t.Errorf("a cookie signed with the old key is refused after rotation")
	}
	v2 := rotated.Encode("198.51.100.10:80", t0)
	if _, ok := old.Decode(v2, t0); ok {
		t.Errorf("rotated codec still signs with the old key")
	}
	if _, ok := dropped.Decode(v1, t0); ok {
		t.Errorf("a cookie signed with a dropped key is accepted")
	}
	if _, ok := dropped.Decode(v2, t0); !ok {
		t.Errorf("a cookie signed with a key still listed is refused")
	}
}

func TestDecodeKnown(t *testing.T) {
	c := mustCodec(t, time.Hour, keyA)
	pool := map[string]bool{"198.51.100.10:80": true}
	known := func(id string) bool { return pool[id] }
	if _, ok := c.DecodeKnown(c.Encode("198.51.100.10:80", t0), t0, known); !ok {
		t.Error("a backend of the pool is refused")
	}
	if id, ok := c.DecodeKnown(c.Encode("198.51.100.99:80", t0), t0, known); ok {
		t.Errorf("a validly signed cookie for a backend not in the pool was accepted: %q", id)
	}
}

func TestNewCodecRejects(t *testing.T) {
	tests := []struct {
		name string
		keys [][]byte
		ttl  time.Duration
		err  error
		msg  string
	}{
		{"no keys", nil, time.Hour, ErrKey, "keys is empty"},
		{"short key", [][]byte{keyA, []byte("short")}, time.Hour, ErrKey, "keys[1] has 5 bytes: want 32 or more"},
		{"ttl", [][]byte{keyA}, 0, ErrConfig, "ttl 0s: want 1s or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCodec(tt.keys, tt.ttl)
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %v, want %v with %q", err, tt.err, tt.msg)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  string
		want string // Set-Cookie header for value "v"
	}{
		{"defaults", Config{}, "", "xlb_sticky=v; Path=/; Max-Age=3600"},
		{"all set", Config{Name: "s", TTL: 10 * time.Minute, Path: "/app", Secure: true, HTTPOnly: true, SameSite: "strict"}, "",
			"s=v; Path=/app; Max-Age=600; HttpOnly; Secure; SameSite=Strict"},
		{"none with secure", Config{Secure: true, SameSite: "none"}, "", "xlb_sticky=v; Path=/; Max-Age=3600; Secure; SameSite=None"},
		{"none without secure", Config{SameSite: "none"}, `same_site "none" needs secure`, ""},
		{"bad same_site", Config{SameSite: "loose"}, `same_site "loose": allowed lax, strict, none`, ""},
		{"bad name", Config{Name: "a b"}, `name "a b"`, ""},
		{"bad path", Config{Path: "app"}, `path "app": want an absolute path`, ""},
		{"short ttl", Config{TTL: time.Millisecond}, "ttl 1ms: want 1s or more", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.err != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.cfg.Cookie("v").String(); got != tt.want {
				t.Errorf("cookie %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCookieThroughHTTP sets the cookie on a response and reads it back from
// a request carrying it, as a browser would.
func TestCookieThroughHTTP(t *testing.T) {
	cfg := Config{Name: "aff", HTTPOnly: true, SameSite: "lax"}
	c := mustCodec(t, time.Hour, keyA)
	rec := httptest.NewRecorder()
	http.SetCookie(rec, cfg.Cookie(c.Encode("198.51.100.10:80", t0)))
	req := httptest.NewRequest("GET", "/", nil)
	for _, ck := range rec.Result().Cookies() {
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	req.Header.Add("Cookie", "other=1")
	if id, ok := c.Decode(cfg.Value(req), t0); !ok || id != "198.51.100.10:80" {
		t.Errorf("read back %q, %v", id, ok)
	}
	if v := (Config{}).Value(req); v != "" {
		t.Errorf("default-named cookie absent, got %q", v)
	}
}

func BenchmarkDecode(b *testing.B) {
	c, _ := NewCodec([][]byte{keyB, keyA}, time.Hour)
	v := c.Encode("198.51.100.10:8080", t0)
	b.ReportAllocs()
	for b.Loop() {
		c.Decode(v, t0)
	}
}

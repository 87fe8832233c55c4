package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDNS(t *testing.T) {
	stub := startDNS(t)
	stub.set("pool.test.", "198.51.100.11", "198.51.100.10", "2001:db8:1::10")
	stub.set("a.test.", "198.51.100.20")
	stub.set("b.test.", "198.51.100.21", "2001:db8:1::21")
	stub.set("c.test.", "198.51.100.22")
	stub.setSRV("_http._tcp.pool.test.",
		srvRecord{priority: 10, weight: 3, port: 8080, target: "a.test."},
		srvRecord{priority: 10, weight: 0, port: 8081, target: "b.test."},
		srvRecord{priority: 20, weight: 5, port: 9000, target: "c.test."}, // backup: not used
	)
	tests := []struct {
		name string
		src  DNS
		want []Target
		err  string
	}{
		{"A", DNS{Name: "pool.test.", Type: TypeA, Port: 80}, []Target{{"198.51.100.10:80", 1}, {"198.51.100.11:80", 1}}, ""},
		{"AAAA", DNS{Name: "pool.test.", Type: TypeAAAA, Port: 80}, []Target{{"[2001:db8:1::10]:80", 1}}, ""},
		{"both", DNS{Name: "pool.test.", Port: 443}, []Target{{"198.51.100.10:443", 1}, {"198.51.100.11:443", 1}, {"[2001:db8:1::10]:443", 1}}, ""},
		{"SRV lowest priority", DNS{Name: "_http._tcp.pool.test.", Type: TypeSRV},
			[]Target{{"198.51.100.20:8080", 3}, {"198.51.100.21:8081", 1}, {"[2001:db8:1::21]:8081", 1}}, ""},
		{"no such name", DNS{Name: "missing.test.", Type: TypeA, Port: 80}, nil, "resolve A missing.test."},
		{"bad type", DNS{Name: "pool.test.", Type: "MX"}, nil, `dns type "MX": allowed A, AAAA, A+AAAA, SRV`},
		{"no port", DNS{Name: "pool.test.", Type: TypeA}, nil, "dns port 0 for A records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.src.Resolver = stub.resolver()
			got, err := tt.src.Targets(context.Background())
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("targets %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Target
		err      string
	}{
		{"plain", "198.51.100.11:80\n198.51.100.10:80 3\n", []Target{{"198.51.100.10:80", 3}, {"198.51.100.11:80", 1}}, ""},
		{"comments and blanks", "# pool\n\n  [2001:db8:1::1]:80   # v6\nbackend.example:8080 2\n",
			[]Target{{"[2001:db8:1::1]:80", 1}, {"backend.example:8080", 2}}, ""},
		{"duplicates add up", "198.51.100.10:80\n198.51.100.10:80 2\n", []Target{{"198.51.100.10:80", 3}}, ""},
		{"empty", "# nothing\n", []Target{}, ""},
		{"no port", "a\n198.51.100.10\n", nil, `pool:1: address "a": want host:port`},
		{"bad port", "198.51.100.10:80\n198.51.100.10:99999\n", nil, `pool:2: port "99999": allowed 1 to 65535`},
		{"bad weight", "198.51.100.10:80 0\n", nil, `pool:1: weight "0": allowed 1 to`},
		{"extra field", "198.51.100.10:80 1 x\n", nil, `pool:1: "198.51.100.10:80 1 x": want ADDRESS:PORT [WEIGHT]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile("pool", []byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileRereadsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.txt")
	writeAtomic(t, path, "198.51.100.10:80\n")
	f := NewFile(path)
	ctx := context.Background()
	got, err := f.Targets(ctx)
	if err != nil || len(got) != 1 {
		t.Fatalf("first read: %v, %v", got, err)
	}
	// Same size and possibly the same mtime, but a new file: re-read.
	writeAtomic(t, path, "198.51.100.11:80\n")
	got, err = f.Targets(ctx)
	if err != nil || !reflect.DeepEqual(got, []Target{{"198.51.100.11:80", 1}}) {
		t.Fatalf("after replace: %v, %v", got, err)
	}
	writeAtomic(t, path, "198.51.100.11:80\nbroken\n")
	if _, err := f.Targets(ctx); err == nil || !strings.Contains(err.Error(), "pool.txt:2") {
		t.Fatalf("malformed file: %v", err)
	}
	os.Remove(path)
	if _, err := f.Targets(ctx); err == nil {
		t.Fatal("missing file: no error")
	}
}

// flaky is a Source whose answers the test sets.
type flaky struct {
	mu  sync.Mutex
	ts  []Target
	err error
}

func (f *flaky) set(ts []Target, err error) {
	f.mu.Lock()
	f.ts, f.err = ts, err
	f.mu.Unlock()
}

func (f *flaky) Targets(context.Context) ([]Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Target(nil), f.ts...), f.err
}

// TestWatch polls quickly; it waits for updates (no timing assertions) and
// checks that failures and empty answers keep the last list.
func TestWatch(t *testing.T) {
	src := &flaky{ts: []Target{{"198.51.100.10:80", 1}}}
	updates := make(chan []Target, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, src, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), func(ts []Target) { updates <- ts })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	wait := func(want []Target) {
		t.Helper()
		select {
		case got := <-updates:
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("update %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no update, want %v", want)
		}
	}
	wait([]Target{{"198.51.100.10:80", 1}})
	src.set(nil, errors.New("resolver down"))
	src.set([]Target{}, nil)
	src.set([]Target{{"198.51.100.12:80", 2}, {"198.51.100.10:80", 1}}, nil)
	// Only the change arrives: failures and the empty answer did not
	// produce an update.
	wait([]Target{{"198.51.100.10:80", 1}, {"198.51.100.12:80", 2}})
}

func TestWatchFirstFailure(t *testing.T) {
	err := Watch(context.Background(), &flaky{}, time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), func([]Target) {
		t.Error("update called")
	})
	if !errors.Is(err, ErrNoTargets) {
		t.Errorf("error %v, want ErrNoTargets", err)
	}
}

// TestWatchDNS follows a DNS name through the stub while its records change.
func TestWatchDNS(t *testing.T) {
	stub := startDNS(t)
	stub.set("pool.test.", "198.51.100.10")
	src := &DNS{Name: "pool.test.", Type: TypeA, Port: 8080, Resolver: stub.resolver()}
	updates := make(chan []Target, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, src, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), func(ts []Target) { updates <- ts })
	}()
	t.Cleanup(func() { cancel(); <-done })
	for _, want := range [][]Target{
		{{"198.51.100.10:8080", 1}},
		{{"198.51.100.10:8080", 1}, {"198.51.100.11:8080", 1}},
	} {
		select {
		case got := <-updates:
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("update %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no update, want %v", want)
		}
		stub.set("pool.test.", "198.51.100.10", "198.51.100.11")
	}
}

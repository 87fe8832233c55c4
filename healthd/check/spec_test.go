package check_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xlb-project/xlb/healthd/check"
)

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   check.Spec
		want check.Spec
	}{
		{
			name: "tcp",
			in:   check.Spec{Kind: check.TCP, Target: "127.0.0.1:80"},
			want: check.Spec{Kind: check.TCP, Target: "127.0.0.1:80", Interval: 2 * time.Second, Timeout: time.Second,
				Rise: 2, Fall: 3, MaxFlaps: 5, FlapWindow: time.Minute, HoldDown: time.Minute},
		},
		{
			name: "http",
			in:   check.Spec{Kind: check.HTTP, Target: "127.0.0.1:80"},
			want: check.Spec{Kind: check.HTTP, Target: "127.0.0.1:80", Interval: 2 * time.Second, Timeout: time.Second,
				Rise: 2, Fall: 3, Path: "/", StatusMin: 200, StatusMax: 399, MaxFlaps: 5, FlapWindow: time.Minute, HoldDown: time.Minute},
		},
		{
			name: "short interval caps the default timeout",
			in:   check.Spec{Kind: check.TCP, Target: "127.0.0.1:80", Interval: 300 * time.Millisecond},
			want: check.Spec{Kind: check.TCP, Target: "127.0.0.1:80", Interval: 300 * time.Millisecond, Timeout: 300 * time.Millisecond,
				Rise: 2, Fall: 3, MaxFlaps: 5, FlapWindow: time.Minute, HoldDown: time.Minute},
		},
		{
			name: "set fields are kept",
			in: check.Spec{Kind: check.HTTPS, Target: "h:443", Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1,
				Path: "/health", StatusMin: 204, StatusMax: 204, MaxFlaps: -1, FlapWindow: time.Second, HoldDown: time.Hour},
			want: check.Spec{Kind: check.HTTPS, Target: "h:443", Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1,
				Path: "/health", StatusMin: 204, StatusMax: 204, MaxFlaps: -1, FlapWindow: time.Second, HoldDown: time.Hour},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.WithDefaults()
			if got.Kind != tt.want.Kind || got.Target != tt.want.Target || got.Interval != tt.want.Interval ||
				got.Timeout != tt.want.Timeout || got.Rise != tt.want.Rise || got.Fall != tt.want.Fall ||
				got.Path != tt.want.Path || got.StatusMin != tt.want.StatusMin || got.StatusMax != tt.want.StatusMax ||
				got.MaxFlaps != tt.want.MaxFlaps || got.FlapWindow != tt.want.FlapWindow || got.HoldDown != tt.want.HoldDown {
				t.Errorf("WithDefaults() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := check.Spec{Kind: check.TCP, Target: "198.51.100.10:80"}
	tests := []struct {
		name    string
		mutate  func(*check.Spec)
		wantErr string // substring; "" for valid
	}{
		{"tcp defaults", func(*check.Spec) {}, ""},
		{"ipv6 target", func(s *check.Spec) { s.Target = "[2001:db8:1::10]:8080" }, ""},
		{"http full", func(s *check.Spec) {
			s.Kind, s.Path, s.Host, s.StatusMin, s.StatusMax, s.BodyContains = check.HTTP, "/h?x=1", "example.com:8080", 200, 204, "ok"
		}, ""},
		{"https insecure", func(s *check.Spec) { s.Kind, s.InsecureSkipVerify = check.HTTPS, true }, ""},
		{"udp payload", func(s *check.Spec) { s.Kind, s.Payload, s.Expect = check.UDP, []byte("ping"), []byte("pong") }, ""},
		{"no damping", func(s *check.Spec) { s.MaxFlaps = -1 }, ""},
		{"timeout equal to interval", func(s *check.Spec) { s.Interval, s.Timeout = time.Second, time.Second }, ""},

		{"empty kind", func(s *check.Spec) { s.Kind = "" }, `kind "": must be one of tcp, http, https, udp`},
		{"bad kind", func(s *check.Spec) { s.Kind = "icmp" }, `kind "icmp"`},
		{"no port", func(s *check.Spec) { s.Target = "198.51.100.10" }, `target "198.51.100.10": must be host:port`},
		{"no host", func(s *check.Spec) { s.Target = ":80" }, `target ":80"`},
		{"port zero", func(s *check.Spec) { s.Target = "h:0" }, `target "h:0": port must be a number from 1 to 65535`},
		{"port too big", func(s *check.Spec) { s.Target = "h:70000" }, `port must be`},
		{"interval too short", func(s *check.Spec) { s.Interval = time.Millisecond }, "interval 1ms: must be from 10ms to 1h0m0s"},
		{"negative interval", func(s *check.Spec) { s.Interval = -time.Second }, "interval -1s"},
		{"timeout above interval", func(s *check.Spec) { s.Interval, s.Timeout = time.Second, 2*time.Second }, "timeout 2s: must be from 1ms to the interval (1s)"},
		{"negative rise", func(s *check.Spec) { s.Rise = -1 }, "rise -1: must be from 1 to 100"},
		{"fall too big", func(s *check.Spec) { s.Fall = 101 }, "fall 101"},
		{"negative window", func(s *check.Spec) { s.FlapWindow = -time.Second }, "flap_window -1s"},
		{"negative hold-down", func(s *check.Spec) { s.HoldDown = -time.Second }, "hold_down -1s"},
		{"path without slash", func(s *check.Spec) { s.Kind, s.Path = check.HTTP, "health" }, `path "health": must start with /`},
		{"path with newline", func(s *check.Spec) { s.Kind, s.Path = check.HTTP, "/a\r\nX: y" }, `path`},
		{"host with space", func(s *check.Spec) { s.Kind, s.Host = check.HTTP, "a b" }, `host "a b"`},
		{"status too low", func(s *check.Spec) { s.Kind, s.StatusMin = check.HTTP, 99 }, "status_min 99: must be from 100 to 599"},
		{"status range reversed", func(s *check.Spec) { s.Kind, s.StatusMin, s.StatusMax = check.HTTP, 300, 200 }, "status_max 200: must be from status_min (300) to 599"},
		{"path on tcp", func(s *check.Spec) { s.Path = "/" }, `path "/": is only allowed for http and https checks`},
		{"body on udp", func(s *check.Spec) { s.Kind, s.BodyContains = check.UDP, "x" }, "body_contains"},
		{"insecure on http", func(s *check.Spec) { s.Kind, s.InsecureSkipVerify = check.HTTP, true }, "insecure_skip_verify true: is only allowed for https checks"},
		{"payload on tcp", func(s *check.Spec) { s.Payload = []byte("x") }, "payload/expect 1/0 bytes: are only allowed for udp checks"},
		{"payload too big", func(s *check.Spec) { s.Kind, s.Payload = check.UDP, make([]byte, 2000) }, "payload 2000 bytes: must be at most 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			}
			if !errors.Is(err, check.ErrInvalidSpec) {
				t.Errorf("Validate() = %v, does not wrap ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []check.State{check.Unknown, check.Healthy, check.Unhealthy} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText(%d): %v", s, err)
		}
		if string(b) != s.String() {
			t.Errorf("MarshalText(%d) = %q, want %q", s, b, s.String())
		}
		var back check.State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", b, back, err, s)
		}
	}
	if got := []string{check.Unknown.String(), check.Healthy.String(), check.Unhealthy.String()}; strings.Join(got, ",") != "unknown,healthy,unhealthy" {
		t.Errorf("names = %v", got)
	}
	var s check.State
	if err := s.UnmarshalText([]byte("up")); err == nil {
		t.Error(`UnmarshalText("up") = nil, want error`)
	}
}

func TestInherit(t *testing.T) {
	vip := check.Spec{Kind: check.HTTP, Interval: 5 * time.Second, Rise: 3, Path: "/healthz", Host: "svc.example",
		StatusMin: 200, StatusMax: 299, InsecureSkipVerify: false, StartHealthy: true, MaxFlaps: -1, HoldDown: time.Minute}
	backend := check.Spec{Target: "198.51.100.11:8080", Rise: 1, Path: "/ready", Timeout: 2 * time.Second}
	got := backend.Inherit(vip)
	want := check.Spec{Kind: check.HTTP, Target: "198.51.100.11:8080", Interval: 5 * time.Second, Timeout: 2 * time.Second,
		Rise: 1, Path: "/ready", Host: "svc.example", StatusMin: 200, StatusMax: 299, StartHealthy: true,
		MaxFlaps: -1, HoldDown: time.Minute}
	if got.Kind != want.Kind || got.Target != want.Target || got.Interval != want.Interval || got.Timeout != want.Timeout ||
		got.Rise != want.Rise || got.Fall != 0 || got.Path != want.Path || got.Host != want.Host ||
		got.StatusMin != want.StatusMin || got.StatusMax != want.StatusMax || got.StartHealthy != want.StartHealthy ||
		got.MaxFlaps != want.MaxFlaps || got.HoldDown != want.HoldDown || got.FlapWindow != 0 {
		t.Fatalf("Inherit() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("inherited spec invalid: %v", err)
	}
	if d := got.WithDefaults(); d.Fall != check.DefaultFall || d.FlapWindow != check.DefaultFlapWindow {
		t.Fatalf("defaults after Inherit: %+v", d)
	}
}

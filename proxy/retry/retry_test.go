package retry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func TestBackoffFullJitterGrowth(t *testing.T) {
	p := Policy{Attempts: 5, BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}.WithDefaults()
	ceilings := []time.Duration{10, 20, 40, 80, 100, 100, 100}
	for i, c := range ceilings {
		n := i + 1
		c *= time.Millisecond
		if got := p.Backoff(n, 0); got != 0 {
			t.Fatalf("retry %d rnd 0: %v, want 0 (full jitter starts at 0)", n, got)
		}
		if got := p.Backoff(n, 0.5); got != c/2 {
			t.Fatalf("retry %d rnd 0.5: %v, want %v", n, got, c/2)
		}
		// With the real source: every wait inside [0, ceiling), spread over it.
		var lo, hi, sum time.Duration = c, 0, 0
		const samples = 2000
		for range samples {
			d := p.Backoff(n, Rand())
			if d < 0 || d >= c {
				t.Fatalf("retry %d: wait %v outside [0, %v)", n, d, c)
			}
			lo, hi, sum = min(lo, d), max(hi, d), sum+d
		}
		if lo > c/10 || hi < c*9/10 {
			t.Fatalf("retry %d: waits %v-%v do not cover [0, %v)", n, lo, hi, c)
		}
		if mean := sum / samples; mean < c*4/10 || mean > c*6/10 {
			t.Fatalf("retry %d: mean wait %v, want about %v", n, mean, c/2)
		}
	}
	if d := p.Backoff(1000, 0.999); d >= 100*time.Millisecond || d < 99*time.Millisecond {
		t.Fatalf("large retry count: %v, want just under the cap", d)
	}
}

func TestBudgetEnforced(t *testing.T) {
	b, err := NewBudget(BudgetConfig{Ratio: 0.2, Floor: -1, Window: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		b.Request(t0)
	}
	granted := 0
	for range 1000 {
		if b.Withdraw(t0) {
			granted++
		}
	}
	if granted != 20 {
		t.Fatalf("%d retries granted for 100 requests at 20%%, want 20", granted)
	}
	// More requests earn more retries.
	for range 10 {
		b.Request(t0.Add(time.Second))
	}
	if got := withdrawAll(b, t0.Add(time.Second)); got != 2 {
		t.Fatalf("10 more requests earned %d retries, want 2", got)
	}
	// Once the window has passed, old requests and retries are forgotten.
	if b.Withdraw(t0.Add(11 * time.Second)) {
		t.Fatal("retry granted with no requests in the window and no floor")
	}
}

// withdrawAll takes retries until the budget refuses, and counts them.
func withdrawAll(b *Budget, now time.Time) int {
	n := 0
	for b.Withdraw(now) {
		n++
	}
	return n
}

func TestBudgetFloor(t *testing.T) {
	b, err := NewBudget(BudgetConfig{Ratio: 0.5, Floor: 2, Window: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	granted := 0
	for range 100 {
		if b.Withdraw(t0) {
			granted++
		}
	}
	if granted != 10 { // 2/s × 5s, no requests
		t.Fatalf("floor granted %d, want 10", granted)
	}
	for range 4 {
		b.Request(t0)
	}
	if got := withdrawAll(b, t0); got != 2 {
		t.Fatalf("4 requests at 50%% added %d to the floor, want 2", got)
	}
}

func TestEligible(t *testing.T) {
	p := Policy{Attempts: 3}.WithDefaults()
	for _, c := range []struct {
		method string
		h      http.Header
		want   bool
	}{
		{"GET", nil, true}, {"HEAD", nil, true}, {"PUT", nil, true}, {"DELETE", nil, true}, {"OPTIONS", nil, true},
		{"POST", nil, false}, {"PATCH", nil, false}, {"CONNECT", nil, false},
		{"POST", http.Header{"Idempotency-Key": {"k"}}, true},
	} {
		if got := p.Eligible(c.method, c.h); got != c.want {
			t.Errorf("%s %v: eligible %v, want %v", c.method, c.h, got, c.want)
		}
	}
	p.NonIdempotent = true
	if !p.Eligible("POST", nil) {
		t.Error("non_idempotent: POST not eligible")
	}
}

func TestRetriesOn(t *testing.T) {
	p := Policy{Attempts: 2, Statuses: []int{503}}.WithDefaults()
	if !p.RetriesOn(ConnectFailure, 0) || !p.RetriesOn(Reset, 0) || p.RetriesOn(PerTryTimeout, 0) {
		t.Fatal("default reasons are not connect_failure and reset")
	}
	if !p.RetriesOn(Status, 503) || p.RetriesOn(Status, 502) {
		t.Fatal("statuses not honoured")
	}
}

func TestPolicyErrors(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		want string
	}{
		{Policy{Attempts: 11}, "attempts 11"},
		{Policy{Attempts: 2, On: []Reason{"5xx"}}, `on "5xx"`},
		{Policy{Statuses: []int{404}}, "statuses 404"},
		{Policy{BodyLimit: -1}, "body_limit -1"},
		{Policy{PerTryTimeout: -1}, "per_try_timeout"},
		{Policy{BackoffBase: time.Second, BackoffMax: time.Millisecond}, "backoff_max 1ms"},
	} {
		err := c.p.WithDefaults().Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.p, err, c.want)
		}
	}
	for _, c := range []struct {
		b    BudgetConfig
		want string
	}{
		{BudgetConfig{Ratio: 2}, "budget.ratio 2"},
		{BudgetConfig{Floor: -3}, "budget.floor -3"},
		{BudgetConfig{Window: time.Millisecond}, "budget.window 1ms"},
	} {
		if _, err := NewBudget(c.b); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.b, err, c.want)
		}
	}
}

func TestBufferReplaysWholeBody(t *testing.T) {
	const body = "the whole body of a POST"
	b, rest, err := Buffer(strings.NewReader(body), int64(len(body)), 1024)
	if err != nil || rest != nil || b == nil {
		t.Fatalf("buffer: %v %v %v", b, rest, err)
	}
	for i := range 3 {
		got, _ := io.ReadAll(b.Reader())
		if string(got) != body {
			t.Fatalf("attempt %d read %q, want the whole body", i, got)
		}
	}
	// Chunked (unknown length) that fits.
	b, rest, err = Buffer(iotest.OneByteReader(strings.NewReader(body)), -1, 1024)
	if err != nil || rest != nil || b.Len() != int64(len(body)) {
		t.Fatalf("chunked: %v %v %v", b, rest, err)
	}
}

func TestBufferTooBigIsSentOnce(t *testing.T) {
	big := strings.Repeat("x", 100)
	// Declared too long: nothing is read.
	src := strings.NewReader(big)
	b, rest, err := Buffer(src, 100, 10)
	if err != nil || b != nil || rest != src || src.Len() != 100 {
		t.Fatalf("declared too long: %v %v, %d left unread", b, err, src.Len())
	}
	// Unknown length, longer than the limit: rest carries all of it.
	b, rest, err = Buffer(strings.NewReader(big), -1, 10)
	if err != nil || b != nil {
		t.Fatalf("streamed too long: %v %v", b, err)
	}
	if got, _ := io.ReadAll(rest); string(got) != big {
		t.Fatalf("rest gave %d bytes, want all %d", len(got), len(big))
	}
}

func TestBufferClientError(t *testing.T) {
	_, _, err := Buffer(iotest.ErrReader(io.ErrUnexpectedEOF), -1, 10)
	if !errors.Is(err, ErrClientBody) {
		t.Fatalf("read error: %v, want ErrClientBody", err)
	}
	_, _, err = Buffer(strings.NewReader("abc"), 10, 100)
	if !errors.Is(err, ErrClientBody) {
		t.Fatalf("short body: %v, want ErrClientBody", err)
	}
}

func TestWaitRespectsDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if Wait(ctx, 2*time.Hour) {
		t.Fatal("waited past the deadline")
	}
	if !Wait(ctx, time.Millisecond) {
		t.Fatal("short wait refused")
	}
	cancel()
	if Wait(ctx, time.Millisecond) {
		t.Fatal("waited on an ended context")
	}
}

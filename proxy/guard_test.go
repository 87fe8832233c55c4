package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/xlb-project/xlb/proxy/breaker"
)

// TestClassify: how an attempt's error counts, and that the client's own
// failures never count against a backend.
func TestClassify(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, dialErr := net.Dial("tcp", addr) // refused: nothing listens
	if dialErr == nil {
		t.Skip("a closed port accepted a connection")
	}
	bg := context.Background()
	gone, cancel := context.WithCancel(bg)
	cancel()
	expired, cancel2 := context.WithTimeout(bg, time.Nanosecond)
	defer cancel2()
	<-expired.Done()
	rules := failureRules{connect: true, reset: true, timeout: true, statuses: []int{503}}
	for _, c := range []struct {
		name      string
		err       error
		ctx, tctx context.Context
		status    int
		kind      resultKind
		outcome   breaker.Outcome
	}{
		{"ok", nil, bg, bg, 200, resultOK, breaker.Success},
		{"listed status", nil, bg, bg, 503, resultOK, breaker.Failure},
		{"other 5xx", nil, bg, bg, 500, resultOK, breaker.Success},
		{"refused", fmt.Errorf("dial: %w", dialErr), bg, bg, 0, resultConnect, breaker.Failure},
		{"reset", errors.New("read: connection reset by peer"), bg, bg, 0, resultReset, breaker.Failure},
		{"per-try timeout", context.DeadlineExceeded, bg, expired, 0, resultTimeout, breaker.Failure},
		{"client went away", context.Canceled, gone, gone, 0, resultClient, breaker.Ignore},
		{"client went away during a failure", dialErr, gone, gone, 0, resultClient, breaker.Ignore},
	} {
		r := classify(c.err, c.ctx, c.tctx)
		if c.err == nil {
			r.status = c.status
		}
		if r.kind != c.kind || rules.outcome(r) != c.outcome {
			t.Errorf("%s: kind %d outcome %d, want %d %d", c.name, r.kind, rules.outcome(r), c.kind, c.outcome)
		}
	}
	off := failureRules{}
	if off.outcome(attemptResult{kind: resultTimeout}) != breaker.Ignore {
		t.Error("a timeout counted although failure_on leaves it out")
	}
}

package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// maxBody is how much of an HTTP body a check reads.
const maxBody = 64 << 10

// userAgent is sent with every HTTP check.
const userAgent = "xlb-health-check/1"

// probe runs one check; it returns nil when the check passes. ctx carries
// the check's deadline.
type probe func(ctx context.Context) error

// newProbe returns the probe for a validated spec with defaults applied.
func newProbe(s Spec) probe {
	switch s.Kind {
	case TCP:
		return func(ctx context.Context) error { return probeTCP(ctx, s.Target) }
	case HTTP, HTTPS:
		return newHTTPProbe(s)
	case UDP:
		return func(ctx context.Context) error { return probeUDP(ctx, s) }
	}
	return func(context.Context) error { return fmt.Errorf("check kind %q: not supported", s.Kind) }
}

var dialer net.Dialer

func probeTCP(ctx context.Context, target string) error {
	c, err := dialer.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	// Close with a reset: a checker making thousands of connections a
	// second must not leave as many sockets in TIME_WAIT.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

func newHTTPProbe(s Spec) probe {
	scheme := "http"
	if s.Kind == HTTPS {
		scheme = "https"
	}
	target := scheme + "://" + s.Target + s.Path
	serverName := s.Host
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(s.Target)
	} else if h, _, err := net.SplitHostPort(serverName); err == nil {
		serverName = h
	}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true, // every check tests a new connection
			TLSClientConfig: &tls.Config{
				ServerName:         serverName,
				InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // the user's explicit choice
			},
			MaxResponseHeaderBytes: 64 << 10,
			ForceAttemptHTTP2:      false,
		},
		// A redirect is an answer: judge its status, do not follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		if s.Host != "" {
			req.Host = s.Host
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // drop the "Get URL:" prefix
			}
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode < s.StatusMin || resp.StatusCode > s.StatusMax {
			return fmt.Errorf("status %d, want %d-%d", resp.StatusCode, s.StatusMin, s.StatusMax)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		if s.BodyContains != "" && !strings.Contains(string(body), s.BodyContains) {
			return fmt.Errorf("body does not contain %q", s.BodyContains)
		}
		return nil
	}
}

func probeUDP(ctx context.Context, s Spec) error {
	c, err := dialer.DialContext(ctx, "udp", s.Target)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(s.Payload); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("receive: port unreachable: %w", err)
			}
			return fmt.Errorf("receive: %w", err)
		}
		if len(s.Expect) == 0 || bytes.Contains(buf[:n], s.Expect) {
			return nil
		}
		// Not the expected reply: keep reading until the deadline.
	}
}

// describe turns a probe error into the Result's text.
func describe(ctx context.Context, err error, timeout time.Duration) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	return err.Error()
}

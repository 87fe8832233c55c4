package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/xlb-project/xlb/proxy/config"
)

// Errors of a request body that breaks its limits (config.BodyLimits).
var (
	errBodyTooLarge = errors.New("request body larger than max_body_bytes")
	errBodyTimeout  = errors.New("request body too slow (body_read_timeout or body_min_rate)")
)

// limitedBody reads a request body within its limits. The waits are read
// deadlines on the client connection, set through the server's writer
// (http.ResponseController) before each read and cleared when the body
// ends, so that nothing of the server's own reading after the body is cut.
type limitedBody struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	lim   config.BodyLimits
	start time.Time
	n     int64
	timed bool // a deadline is set on the connection
	err   error
}

func newLimitedBody(body io.ReadCloser, w http.ResponseWriter, lim config.BodyLimits) *limitedBody {
	return &limitedBody{body: body, rc: http.NewResponseController(w), lim: lim, start: time.Now()}
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if max := b.lim.MaxBodyBytes; max > 0 && int64(len(p)) > max-b.n+1 {
		p = p[:max-b.n+1] // one more than allowed shows a body too large
	}
	if err := b.arm(time.Now()); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.body.Read(p)
	b.n += int64(n)
	if max := b.lim.MaxBodyBytes; max > 0 && b.n > max {
		b.err = fmt.Errorf("%w (%d bytes)", errBodyTooLarge, max)
		b.disarm()
		return 0, b.err
	}
	switch {
	case err == io.EOF:
		b.disarm()
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.err = fmt.Errorf("%w: %d bytes in %s", errBodyTimeout, b.n, time.Since(b.start).Round(time.Millisecond))
		return n, b.err
	}
	return n, err
}

// arm sets the read deadline for the next read: body_read_timeout from
// now, or earlier when body_min_rate needs the next bytes sooner.
func (b *limitedBody) arm(now time.Time) error {
	idle := b.lim.BodyReadTimeout.D()
	if idle <= 0 {
		return nil
	}
	d := now.Add(idle)
	if rate := b.lim.BodyMinRate; rate > 0 {
		// From body_read_timeout after the start, at least rate bytes per
		// second on average.
		due := time.Duration(float64(b.n) / float64(rate) * float64(time.Second))
		byRate := b.start.Add(max(idle, due))
		if !byRate.After(now) {
			return fmt.Errorf("%w: %d bytes in %s, below body_min_rate %d bytes/s", errBodyTimeout, b.n, now.Sub(b.start).Round(time.Millisecond), rate)
		}
		if byRate.Before(d) {
			d = byRate
		}
	}
	if b.rc.SetReadDeadline(d) == nil {
		b.timed = true
	}
	return nil
}

func (b *limitedBody) disarm() {
	if b.timed {
		_ = b.rc.SetReadDeadline(time.Time{})
		b.timed = false
	}
}

func (b *limitedBody) Close() error {
	b.disarm()
	return b.body.Close()
}

// bodyStatus is the answer to a request whose body could not be read:
// 413 or 408 for a broken limit, 400 for anything else (malformed
// chunked framing, a body shorter than its Content-Length).
func bodyStatus(err error) int {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

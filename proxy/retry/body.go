package retry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrClientBody marks a failure to read the client's request body while
// buffering it: the client's fault, never counted against a backend.
var ErrClientBody = errors.New("read request body from client")

// Body is a request body kept in memory so that every attempt sends all of
// it: each attempt reads its own Reader, never the client's body, which was
// read (and may be closed) by the first.
type Body struct {
	data []byte
}

// Buffer reads a request body of the given length (-1: unknown, e.g.
// chunked) up to limit bytes. When it fits, it returns the buffered body and
// a nil rest. When it does not (declared too long, or more bytes than limit),
// it returns nil and rest, a reader giving the whole body (what was read
// first, then the remainder of body) to send once. A read error is wrapped
// in ErrClientBody.
func Buffer(body io.Reader, length, limit int64) (buf *Body, rest io.Reader, err error) {
	if body == nil || length == 0 {
		return &Body{}, nil, nil
	}
	if length > limit {
		return nil, body, nil
	}
	n := limit + 1
	if length > 0 {
		n = length + 1 // read to EOF: a body longer than declared is the client's error
	}
	data, err := io.ReadAll(io.LimitReader(body, n))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrClientBody, err)
	}
	switch {
	case length > 0 && int64(len(data)) != length:
		return nil, nil, fmt.Errorf("%w: %d bytes, %d declared", ErrClientBody, len(data), length)
	case int64(len(data)) > limit:
		return nil, io.MultiReader(bytes.NewReader(data), body), nil
	}
	return &Body{data: data}, nil, nil
}

// Len is the body's length.
func (b *Body) Len() int64 { return int64(len(b.data)) }

// Reader returns a new reader of the whole body, for one attempt.
func (b *Body) Reader() io.ReadCloser {
	return io.NopCloser(bytes.NewReader(b.data))
}

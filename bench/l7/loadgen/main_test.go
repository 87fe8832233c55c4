package main

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
		keep   bool
		err    bool
		rest   string // what follows the response on the connection
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nNEXT", 200, true, false, "NEXT"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\nNEXT", 200, true, false, "NEXT"},
		{"close", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 503, false, false, ""},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, false, false, ""},
		{"no length", "HTTP/1.1 200 OK\r\n\r\nbody", 200, false, true, ""},
		{"garbage", "SSH-2.0-x\r\n", 0, false, true, ""},
		{"truncated", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", 200, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			status, keep, err := readResponse(br)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if tt.err {
				return
			}
			if status != tt.status || keep != tt.keep {
				t.Errorf("status %d keep %v, want %d %v", status, keep, tt.status, tt.keep)
			}
			rest := make([]byte, 16)
			n, _ := br.Read(rest)
			if string(rest[:n]) != tt.rest {
				t.Errorf("left %q on the connection, want %q", rest[:n], tt.rest)
			}
		})
	}
}

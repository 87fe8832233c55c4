package proxy

import "testing"

// TestSmuggleScan feeds byte streams to the header sniffer, split at every
// position into two reads, and checks the verdict.
func TestSmuggleScan(t *testing.T) {
	tests := []struct {
		name, in string
		want     bool
	}{
		{"plain GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"CL only", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", false},
		{"TE only", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"TE and CL lower case", "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", true},
		{"space before colon", "POST / HTTP/1.1\r\nContent-Length : 3\r\nTransfer-Encoding : chunked\r\n\r\n", true},
		{"second request", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"LF only", "POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", true},
		{"in a body, no request line", "POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"split across blocks", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	}
	for _, tc := range tests {
		for cut := 0; cut <= len(tc.in); cut++ {
			c := &trackedConn{sniff: true}
			c.scan([]byte(tc.in[:cut]))
			c.scan([]byte(tc.in[cut:]))
			if got := c.smuggled.Load(); got != tc.want {
				t.Errorf("%s (cut at %d): smuggled = %v, want %v", tc.name, cut, got, tc.want)
				break
			}
		}
	}
}

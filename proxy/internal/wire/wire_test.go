package wire

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestCanonicalKey(t *testing.T) {
	for _, k := range []string{"host", "Host", "HOST", "content-type", "Content-Type", "x-request-id", "X-Request-Id",
		"www-authenticate", "a", "-a-", "x--y", "Te", "TE", "foo_bar", "1abc"} {
		if got, want := CanonicalKey(k), http.CanonicalHeaderKey(k); got != want {
			t.Errorf("CanonicalKey(%q) = %q, want %q", k, got, want)
		}
	}
}

func TestTokenListHas(t *testing.T) {
	tests := []struct {
		values []string
		token  string
		want   bool
	}{
		{[]string{"keep-alive, Close"}, "close", true},
		{[]string{"a", " b\t"}, "B", true},
		{[]string{"closed"}, "close", false},
		{nil, "close", false},
	}
	for _, tt := range tests {
		if got := TokenListHas(tt.values, tt.token); got != tt.want {
			t.Errorf("TokenListHas(%q, %q) = %v", tt.values, tt.token, got)
		}
	}
}

func TestWriteValueReplacesLineBreaks(t *testing.T) {
	var sb strings.Builder
	bw := bufio.NewWriter(&sb)
	WriteValue(bw, "a\r\nb")
	WriteUint(bw, 255, 16)
	_ = bw.Flush()
	if sb.String() != "a  bff" {
		t.Errorf("got %q", sb.String())
	}
}

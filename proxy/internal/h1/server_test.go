package h1

import (
	"net"
	"os"
	"syscall"
	"testing"
)

func TestTemporaryAccept(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}, true},
		{net.ErrClosed, false},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EBADF)}, false},
	}
	for _, tt := range tests {
		if got := temporaryAccept(tt.err); got != tt.want {
			t.Errorf("temporaryAccept(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

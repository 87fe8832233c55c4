package api

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientDaemonNotRunning(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status()
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "nothing listens on") {
		t.Fatalf("error = %v", err)
	}
}

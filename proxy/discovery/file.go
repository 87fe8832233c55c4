package discovery

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// MaxWeight is the largest weight a file may give a target.
const MaxWeight = 1 << 20

// File reads targets from a text file, one per line:
//
//	# comment
//	198.51.100.10:8080
//	198.51.100.11:8080 3      (weight 3; default 1)
//	backend.example:80
//
// Targets re-reads the file only when it was replaced (another inode) or its
// modification time or size changed since the last read. Replace the file atomically (write a new file
// and rename it over the old one), so that a reader never sees it half
// written. A malformed file is an error naming the line; the previous list
// stays in use (see Watch).
type File struct {
	Path string

	mu   sync.Mutex
	info os.FileInfo // of the last read
	last []Target
}

// NewFile returns a source reading path.
func NewFile(path string) *File {
	return &File{Path: path}
}

// Targets returns the file's targets, re-reading it if it changed.
func (f *File) Targets(context.Context) ([]Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.Path)
	if err != nil {
		return nil, fmt.Errorf("read backends file: %w", err)
	}
	if f.info != nil && os.SameFile(st, f.info) && st.ModTime().Equal(f.info.ModTime()) && st.Size() == f.info.Size() {
		return append([]Target(nil), f.last...), nil
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("read backends file: %w", err)
	}
	ts, err := ParseFile(f.Path, data)
	if err != nil {
		return nil, err
	}
	f.info, f.last = st, ts
	return append([]Target(nil), ts...), nil
}

// ParseFile parses the contents of a backends file; name is used in errors.
func ParseFile(name string, data []byte) ([]Target, error) {
	ts := []Target{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) > 2 {
			return nil, fmt.Errorf("%s:%d: %q: want ADDRESS:PORT [WEIGHT]", name, n, strings.TrimSpace(line))
		}
		host, port, err := net.SplitHostPort(fields[0])
		if err != nil || host == "" {
			return nil, fmt.Errorf("%s:%d: address %q: want host:port ([v6]:port for IPv6)", name, n, fields[0])
		}
		if _, ok := parsePort(port); !ok {
			return nil, fmt.Errorf("%s:%d: port %q: allowed 1 to 65535", name, n, port)
		}
		t := Target{Addr: fields[0], Weight: 1}
		if len(fields) == 2 {
			w, err := strconv.Atoi(fields[1])
			if err != nil || w < 1 || w > MaxWeight {
				return nil, fmt.Errorf("%s:%d: weight %q: allowed 1 to %d", name, n, fields[1], MaxWeight)
			}
			t.Weight = w
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return normalise(ts), nil
}

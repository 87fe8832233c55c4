package maglev

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

var fuzzSizes = []uint32{7, 11, 13, 31, 101, 251, 1021}

// FuzzBuild decodes a backend set from bytes: a size choice, then per
// backend a weight byte (and sometimes 4) and a short Key, so duplicates,
// weight 0, huge weights and empty Keys all occur.
func FuzzBuild(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 1, 'b', 1, 'c'})
	f.Add([]byte{3, 0, 'a', 0, 'b'})
	f.Add([]byte{6, 255, 0xff, 0xff, 0xff, 0xff, 'x', 1, 'y', 2, 'z'})
	f.Add([]byte{1, 1, 'a', 1, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		size := fuzzSizes[int(data[0])%len(fuzzSizes)]
		data = data[1:]
		var backends []Backend
		for len(data) >= 2 && len(backends) < 64 {
			w := uint32(data[0] % 8)
			data = data[1:]
			if w == 7 && len(data) >= 5 {
				w = binary.LittleEndian.Uint32(data)
				data = data[4:]
			}
			n := min(int(data[0]%4), len(data)-1)
			backends = append(backends, Backend{Key: string(data[1 : 1+n]), Weight: w})
			data = data[1+n:]
		}
		table, err := Build(backends, size)
		usable, dup := 0, false
		keys := map[string]bool{}
		for _, b := range backends {
			dup = dup || keys[b.Key]
			keys[b.Key] = true
			if b.Weight > 0 {
				usable++
			}
		}
		switch {
		case dup:
			if !errors.Is(err, ErrDuplicateKey) {
				t.Fatalf("duplicate keys: err = %v", err)
			}
		case usable == 0:
			if !errors.Is(err, ErrNoBackends) {
				t.Fatalf("no usable backend: err = %v", err)
			}
		case usable > int(size):
			if !errors.Is(err, ErrSize) {
				t.Fatalf("%d backends, size %d: err = %v", usable, size, err)
			}
		case err != nil:
			t.Fatalf("unexpected error: %v", err)
		}
		if err != nil {
			if len(table) != 0 {
				t.Fatalf("error with %d slots", len(table))
			}
			return
		}
		if len(table) != int(size) {
			t.Fatalf("%d slots, want %d", len(table), size)
		}
		for s, i := range table {
			if int(i) >= len(backends) || backends[i].Weight == 0 {
				t.Fatalf("slot %d: position %d is not a backend of weight > 0", s, i)
			}
		}
		if want := referenceBuild(backends, size); !slices.Equal(table, want) {
			t.Fatalf("table differs from the reference")
		}
	})
}

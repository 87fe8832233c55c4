package maglev

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/maglev/golden.txt from the current algorithm")

// goldenFile holds one line per case: name, size, and the SHA-256 of the
// table as little-endian uint32 input positions. A change to the hash, the
// seeds, the turn order or the weighting fails this test: such a change
// breaks agreement between balancers and needs a new AlgorithmVersion.
var goldenFile = filepath.Join("..", "testdata", "maglev", "golden.txt")

func goldenCases() []struct {
	name     string
	backends []Backend
	size     uint32
} {
	weighted := set(8, 0)
	for i := range weighted {
		weighted[i].Weight = uint32(i) // includes a weight 0
	}
	v6 := []Backend{{"2001:db8::11", 1}, {"2001:db8::12", 1}, {"2001:db8::13", 2}}
	return []struct {
		name     string
		backends []Backend
		size     uint32
	}{
		{"n3-m7", set(3, 1), 7},
		{"n3-m13-ipv6-weighted", v6, 13},
		{"n10-m65537", set(10, 1), 65537},
		{"n100-m65537", set(100, 1), 65537},
		{"n8-weights0to7-m65537", weighted, 65537},
		{"n1000-m1048573", set(1000, 1), 1048573},
	}
}

func tableSum(table []uint32) string {
	h := sha256.New()
	var b [4]byte
	for _, i := range table {
		binary.LittleEndian.PutUint32(b[:], i)
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestGolden(t *testing.T) {
	got := make(map[string]string)
	var lines []string
	for _, tc := range goldenCases() {
		table := mustBuild(t, tc.backends, tc.size)
		sum := tableSum(table)
		got[tc.name] = sum
		line := fmt.Sprintf("%s %d %s", tc.name, tc.size, sum)
		if tc.size < 20 {
			line += fmt.Sprintf(" %v", table)
		}
		lines = append(lines, line)
	}
	if *update {
		header := fmt.Sprintf("# maglev AlgorithmVersion %d: case, size, sha256 of the table (uint32 LE positions)[, table]\n", AlgorithmVersion)
		if err := os.WriteFile(goldenFile, []byte(header+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(goldenFile)
	if err != nil {
		t.Fatalf("open golden file (go test -run TestGolden -update to create): %v", err)
	}
	defer f.Close()
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		seen++
		if got[fields[0]] != fields[2] {
			t.Errorf("table %s: sha256 %s, golden %s: the table definition changed", fields[0], got[fields[0]], fields[2])
		}
	}
	if seen != len(got) {
		t.Errorf("golden file has %d cases, want %d", seen, len(got))
	}
}

package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Builds before this one pinned the table maps (tables_N) as hashes of maps;
// this one has arrays of maps, which the kernel will not take in their
// place. takeEarlierTables reads the tables out of such pins and unpins
// them, so that Load creates the arrays; Load then installs what was read.
// A program still attached keeps its own references to the old maps and
// forwards with them until Attach replaces it.

// takeEarlierTables returns VIP ID → table of every table map pinned under
// pinDir as a hash of maps, and removes those pins.
func takeEarlierTables(pinDir string) (map[uint32][]uint32, error) {
	tables := map[uint32][]uint32{}
	if pinDir == "" {
		return tables, nil
	}
	for _, size := range SupportedTableSizes {
		path := filepath.Join(pinDir, fmt.Sprintf("tables_%d", size))
		outer, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned tables_%d: %w", size, err)
		}
		if outer.Type() != ebpf.HashOfMaps {
			outer.Close()
			continue
		}
		err = readOuter(outer, size, tables)
		outer.Close()
		if err != nil {
			return nil, fmt.Errorf("read pinned tables_%d of an earlier build: %w", size, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("unpin tables_%d of an earlier build: %w", size, err)
		}
	}
	return tables, nil
}

// readOuter adds the tables held by outer, a hash of maps, to tables.
func readOuter(outer *ebpf.Map, size uint32, tables map[uint32][]uint32) error {
	var vipID uint32
	var innerID ebpf.MapID
	buf := make([]byte, 4*size)
	it := outer.Iterate()
	for it.Next(&vipID, &innerID) {
		if vipID >= MaxVIPs {
			continue // not a VIP's table (an earlier build's probe)
		}
		inner, err := ebpf.NewMapFromID(innerID)
		if err != nil {
			return fmt.Errorf("open table of vip %d: %w", vipID, err)
		}
		err = inner.Lookup(uint32(0), buf)
		inner.Close()
		if err != nil {
			return fmt.Errorf("read table of vip %d: %w", vipID, err)
		}
		table := make([]uint32, size)
		for i := range table {
			table[i] = binary.NativeEndian.Uint32(buf[4*i:])
		}
		tables[vipID] = table
	}
	return it.Err()
}

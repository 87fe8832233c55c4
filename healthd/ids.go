package healthd

import (
	"errors"
	"fmt"
)

// idAlloc hands out IDs round robin, so a freed ID is reused as late as
// possible (flows in the LRU may still name it).
type idAlloc struct {
	first, limit, next uint32
	used               map[uint32]bool
	changed            bool // since the ID file was written
}

var errNoIDs = errors.New("no free ID")

func (a *idAlloc) get() (uint32, error) {
	if a.next < a.first {
		a.next = a.first
	}
	for range a.limit - a.first {
		id := a.next
		a.next++
		if a.next >= a.limit {
			a.next = a.first
		}
		if !a.used[id] {
			a.used[id] = true
			a.changed = true
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d in use", errNoIDs, a.limit-a.first)
}

func (a *idAlloc) put(id uint32) {
	delete(a.used, id)
	a.changed = true
}

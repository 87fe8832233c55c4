//go:build !amd64

package maglev

// hasClaim is false: claim is written for amd64 only.
const hasClaim = false

func claim(used *uint64, t *uint32, walks *walk, turns []uint32, m uint32, width uint32) {
	panic("maglev: claim needs amd64")
}

// hasEarliest is false: earliest is written for amd64 only.
const hasEarliest = false

func earliest(fs []uint32, invX, base uint64, m uint32) int {
	panic("maglev: earliest needs amd64")
}

package maglev

import "golang.org/x/sys/cpu"

// hasClaim: claim uses only instructions every amd64 CPU has.
const hasClaim = true

// claim takes the given turns, in order, as fill does: the backend
// walks[k] of turn k claims the next free slot of its permutation in the
// occupancy bitset used and the table t. There must be a free slot for each
// turn. width is the number of slots probed at a time: 1 (which falls back
// to 8), 4 or 8.
//
//go:noescape
func claim(used *uint64, t *uint32, walks *walk, turns []uint32, m uint32, width uint32)

// hasEarliest reports whether earliest can run here: it needs AVX-512 (F,
// DQ for the 64-bit multiply, VL for the narrow minimums).
var hasEarliest = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL

// earliest returns the index in fs of the free slot earliest in a
// permutation: the one with the smallest position j = ⌊((slot·invX + base)
// mod 2^64)·M/2^64⌋ (see fill), 8 slots at a time. fs must not be empty.
//
//go:noescape
func earliest(fs []uint32, invX, base uint64, m uint32) int

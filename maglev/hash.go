package maglev

import "math/bits"

// The two SipHash-2-4 keys that turn a backend Key into its permutation.
// Each is the 16 ASCII bytes shown, read as two little-endian uint64 words
// (k0 from bytes 0-7, k1 from bytes 8-15), as the SipHash paper defines it.
// They are part of the table format: changing one moves almost every slot on
// every balancer, so they never change within an AlgorithmVersion.
var (
	offsetSeed = seed("xlb/maglev/offst") // offset = SipHash(offsetSeed, Key) mod M
	skipSeed   = seed("xlb/maglev/skip.") // skip = SipHash(skipSeed, Key) mod (M-1) + 1
)

type sipKey struct{ k0, k1 uint64 }

func seed(s string) sipKey {
	if len(s) != 16 {
		panic("maglev: seed must be 16 bytes")
	}
	return sipKey{le64(s), le64(s[8:])}
}

// le64 reads the first 8 bytes of s as a little-endian word.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// sipHash is SipHash-2-4 (Aumasson and Bernstein, 2012) of the bytes of s
// with the 128-bit key k: 2 compression rounds per 8-byte word, 4
// finalisation rounds, 64-bit output. It is defined on bytes with fixed
// little-endian word order, so it gives the same value on every machine; the
// tests check it against the reference vectors of the paper.
func sipHash(k sipKey, s string) uint64 {
	v0 := k.k0 ^ 0x736f6d6570736575
	v1 := k.k1 ^ 0x646f72616e646f6d
	v2 := k.k0 ^ 0x6c7967656e657261
	v3 := k.k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(s)
	for ; len(s) >= 8; s = s[8:] {
		m := le64(s)
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	last := uint64(n) << 56
	for i := len(s) - 1; i >= 0; i-- {
		last |= uint64(s[i]) << (8 * i)
	}
	v3 ^= last
	round()
	round()
	v0 ^= last
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}

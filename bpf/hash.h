/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow hash: Bob Jenkins' lookup3 mixing over 32-bit words, with a fixed
 * seed from the config map so that every balancer picks the same slot.
 * Words are the little-endian loads of the header bytes (the datapath runs
 * as bpfel); loader/hash.go computes the same function in Go. */
#ifndef XLB_HASH_H
#define XLB_HASH_H

#include "structs.h"

#define HASH_INIT 0xdeadbeef

static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define HASH_MIX(a, b, c)                        \
	do {                                     \
		a -= c; a ^= rol32(c, 4);  c += b; \
		b -= a; b ^= rol32(a, 6);  a += c; \
		c -= b; c ^= rol32(b, 8);  b += a; \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4);  b += a; \
	} while (0)

#define HASH_FINAL(a, b, c)                      \
	do {                                     \
		c ^= b; c -= rol32(b, 14);       \
		a ^= c; a -= rol32(c, 11);       \
		b ^= a; b -= rol32(a, 25);       \
		c ^= b; c -= rol32(b, 16);       \
		a ^= c; a -= rol32(c, 4);        \
		b ^= a; b -= rol32(a, 14);       \
		c ^= b; c -= rol32(b, 24);       \
	} while (0)

static __always_inline __u32 load32(const __u8 *p)
{
	__u32 w;

	__builtin_memcpy(&w, p, 4);
	return w;
}

/* flow_hash hashes source, destination and ports; src_only hashes the
 * source address alone. */
static __always_inline __u32 flow_hash(const struct flow_key *k, __u32 seed,
				       int src_only)
{
	__u32 a, b, c;
	__u32 ports = ((__u32)k->sport << 16) | k->dport;

	a = b = c = HASH_INIT + seed;
	if (k->family == FAMILY_V4) {
		a += load32(k->src);
		if (!src_only) {
			b += load32(k->dst);
			c += ports;
		}
		HASH_FINAL(a, b, c);
		return c;
	}
	a += load32(k->src);
	b += load32(k->src + 4);
	c += load32(k->src + 8);
	HASH_MIX(a, b, c);
	a += load32(k->src + 12);
	if (src_only) {
		HASH_FINAL(a, b, c);
		return c;
	}
	b += load32(k->dst);
	c += load32(k->dst + 4);
	HASH_MIX(a, b, c);
	a += load32(k->dst + 8);
	b += load32(k->dst + 12);
	c += ports;
	HASH_FINAL(a, b, c);
	return c;
}

/* vip_addr_hash spreads a destination address over the VIP filter:
 * the xor of its 32-bit words times a 32-bit golden ratio constant, top
 * 16 bits. */
static __always_inline __u32 vip_addr_hash(const struct flow_key *k)
{
	__u32 w = load32(k->dst);

	if (k->family == FAMILY_V6)
		w ^= load32(k->dst + 4) ^ load32(k->dst + 8) ^ load32(k->dst + 12);
	return (w * 0x9e3779b9) >> 16;
}

#endif

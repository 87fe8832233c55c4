/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksums of the headers xlb builds. */
#ifndef XLB_CSUM_H
#define XLB_CSUM_H

#include "common.h"

/* csum_words returns the checksum of a 20-byte header given as five
 * 32-bit words whose checksum field is zero: the one's complement sum of
 * their 16-bit halves, folded (2^16 = 1 modulo 2^16 - 1). */
static __always_inline __u16 csum_words(__u32 w0, __u32 w1, __u32 w2,
					__u32 w3, __u32 w4)
{
	__u64 sum = (__u64)w0 + w1 + w2 + w3 + w4;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* csum_fold folds a 64-bit sum of 32-bit words (bpf_csum_diff results,
 * little-endian loads of header words) into the Internet checksum. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#endif

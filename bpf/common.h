/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, constants and the exit reasons shared by the xlb programs. */
#ifndef XLB_COMMON_H
#define XLB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_VIPS 1024
#define MAX_BACKENDS 4096
#define VIP_FILTER_BITS 65536
#define FLOW_CACHE_BITS 14
#define FLOW_CACHE_SIZE (1 << FLOW_CACHE_BITS)
#define VIP_FILTER_WORDS (VIP_FILTER_BITS / 64)

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)

#define IPV4_MF 0x2000
#define IPV4_DF 0x4000
#define IPV4_OFFSET 0x1FFF

#define OUTER_TTL 64

#define ICMP_DEST_UNREACH 3	/* with code ICMP_FRAG_NEEDED */
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PKT_TOOBIG 2
#define IPV6_MIN_MTU 1280

/* The ICMP headers, declared here: <linux/icmp.h> pulls in libc headers. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;		/* unused; next-hop MTU for "frag needed" */
};

/* Every exit that does not forward has a reason and a counter (map exits).
 * The "pass" reasons hand the packet to the kernel untouched; "tx" sends an
 * answer back; the others drop it. The Go side lists the same names in the same order from 1. */
enum exit_reason {
	EXIT_NONE = 0,		/* no exit: parsing goes on; never counted */
	EXIT_NOT_IP = 1,	/* pass: neither IPv4 nor IPv6 (ARP, LLDP, ...) */
	EXIT_MALFORMED = 2,	/* pass: truncated or invalid header */
	EXIT_OTHER_PROTO = 3,	/* pass: not TCP, UDP or ICMP "too big" */
	EXIT_NO_VIP = 4,	/* pass: destination is no VIP */
	EXIT_FRAGMENT = 5,	/* pass: IP fragment, ports unknown */
	EXIT_IPV6_EXT = 6,	/* pass: IPv6 extension header, not parsed */
	EXIT_IP_OPTIONS = 7,	/* drop: VIP packet with IPv4 options */
	EXIT_NO_BACKEND = 8,	/* drop: VIP without table or usable backend */
	EXIT_BAD_BACKEND = 9,	/* drop: backend family differs from VIP's */
	EXIT_TOO_BIG = 10,	/* drop: larger than the MTU after encapsulation */
	EXIT_NO_SOURCE = 11,	/* drop: no outer source prefix configured */
	EXIT_ENCAP_FAILED = 12,	/* drop: bpf_xdp_adjust_head refused */
	EXIT_ICMP_TOO_BIG = 13,	/* tx: too big; ICMP "too big" sent to the client */
	EXIT_ICMP_LIMITED = 14,	/* drop: too big; ICMP rate limit reached */
	EXIT_MAX = 15,
};

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs shared with Go (bpf2go -type): fixed-width fields, padding spelled
 * out, addresses and ports in network byte order. loader/structs_test.go
 * checks their sizes. */
#ifndef XLB_STRUCTS_H
#define XLB_STRUCTS_H

#include "common.h"

#define FAMILY_V4 4
#define FAMILY_V6 6

/* vip_key: IPv4 addresses use addr[0..3], the rest is zero. port 0 is the
 * port wildcard. */
struct vip_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

enum vip_mode {
	MODE_IPIP = 0,
	MODE_L2DSR = 1,
};

#define VIP_F_HASH_SRC_ONLY 0x1
/* A UDP VIP whose datagrams keep no flow state: each is placed by the
 * Maglev table alone (one-packet scheduling, for request/response traffic
 * such as DNS). */
#define VIP_F_STATELESS 0x2

struct vip_meta {
	__u32 id;		/* indexes counters and the table maps */
	__u32 table_size;	/* which tables_N map holds its table */
	__u8 mode;		/* enum vip_mode */
	__u8 flags;		/* VIP_F_* */
	__u16 pad;
};

#define BACKEND_F_USABLE_NEW 0x1
#define BACKEND_F_USABLE_ESTABLISHED 0x2

/* 8-byte aligned, so that the datapath copies and reads it in whole words
 * (a copy on the BPF stack must be read at aligned offsets). */
struct backend {
	__u8 addr[16];
	__u8 mac[6];		/* next hop's Ethernet address */
	__u8 family;		/* FAMILY_V4/V6; 0 = no backend */
	__u8 flags;		/* BACKEND_F_* */
} __attribute__((aligned(8)));

/* flow_key is the 5-tuple as the client sent it. 8-byte aligned: the
 * datapath reads it in 64-bit words. */
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
} __attribute__((aligned(8)));

/* flow remembers a flow's backend, and the VIP it was selected for, so
 * that a packet of an established flow needs no VIP lookup. */
struct flow {
	__u32 backend_id;
	__u32 hash;		/* full 5-tuple hash: outer source, flow label */
	__u64 last_seen;	/* bpf_ktime_get_ns() of the last UDP packet */
	__u32 vip_id;
	__u8 mode;		/* the VIP's enum vip_mode */
	__u8 pad[3];
};

/* flow_cache_slot is one slot of the flow cache (flowcache.h): a copy of
 * a flow's entry and of its backend, so that a packet served from the cache
 * reads no backends entry. The copy is valid while gen equals the config's
 * gen, which the loader bumps after any backend change. */
/* A TCP SYN's choice, not yet in the flow table: the first packet of the
 * flow after the SYN puts it there (flowcache.h). */
#define SLOT_F_PENDING 0x1

struct flow_cache_slot {
	struct flow_key key;
	__u32 seq;		/* odd while a CPU writes the slot */
	__u32 gen;		/* config gen when the backend was copied */
	__u32 backend_id;
	__u32 hash;
	__u16 vip_id;		/* the flow's VIP */
	__u8 mode;
	__u8 flags;		/* SLOT_F_* */
	__u32 hits;		/* cache hits since the slot was filled */
	__u64 last_seen;	/* UDP: newer than the flow table's copy */
	struct backend backend;	/* the backend's copy (flags unused) */
};

#define CONFIG_F_SRC4 0x1
#define CONFIG_F_SRC6 0x2
#define CONFIG_F_REDIRECT 0x4	/* send through the egress devmap */
#define CONFIG_F_ICMP_TOO_BIG 0x8	/* answer too big packets (icmp.h) */
#define CONFIG_F_STATELESS 0x10	/* some VIP has VIP_F_STATELESS */

struct config {
	__u8 src_mac[6];
	__u16 pad;
	__u32 mtu;		/* largest outer IP packet towards backends */
	__u32 hash_seed;
	__be32 src4;		/* outer IPv4 source prefix */
	__be32 src4_mask;	/* its host bits */
	__u8 src6[16];		/* outer IPv6 source prefix */
	__be32 src6_mask;	/* host bits of its last 32 bits */
	__u32 flags;		/* CONFIG_F_* */
	__u64 udp_timeout_ns;
	__u32 gen;		/* bumped by the loader after a backend changes */
	__u32 pad2;
};

/* icmp_limit is the ICMP rate limit (icmp.h): each message costs cost_ns
 * of a CPU's budget, which grows with the clock up to burst_ns. Apart from
 * struct config so that pinned settings keep their size across upgrades. */
struct icmp_limit {
	__u64 cost_ns;
	__u64 burst_ns;
};

/* icmp_budget is one CPU's ICMP token bucket (icmp.h), kept in ns of
 * sending time (see struct icmp_limit). */
struct icmp_budget {
	__u64 budget_ns;
	__u64 last_ns;		/* bpf_ktime_get_ns() of the last update */
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

#endif

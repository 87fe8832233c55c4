/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What xdp_decap trusts: tunnel packets whose outer source lies in a
 * balancer prefix and, when destinations are configured, whose outer
 * destination is one of this host's own addresses. Anything else could be
 * a host injecting packets with any inner source, so it is dropped and
 * counted by reason. The maps and counters are xdp_decap's own; the loader
 * fills them before attaching and reads them through the attached
 * program's map IDs (no pins). */
#ifndef XLB_TRUST_H
#define XLB_TRUST_H

#include "common.h"

#define MAX_BALANCER_PREFIXES 64
#define MAX_DECAP_DESTS 16

/* Counters of decap_stats (loader DecapReasons lists them in this order). */
enum decap_reason {
	DECAP_OK = 0,		/* decapsulated and passed to the kernel */
	DECAP_UNTRUSTED_SOURCE = 1,	/* drop: outer source in no balancer prefix */
	DECAP_WRONG_DEST = 2,	/* drop: outer destination not this host's */
	DECAP_MAX = 3,
};

#define DECAP_F_CHECK_DEST 0x1

/* trust_config: flags (DECAP_F_*). */
struct trust_config {
	__u32 flags;
};

struct prefix4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct prefix6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* trust_dest: an IPv4 address uses addr[0..3], the rest is zero. */
struct trust_dest {
	__u8 addr[16];
	__u8 family;		/* 4 or 6 */
	__u8 pad[3];
};

/* balancers4: IPv4 balancer prefix -> 1; written by the loader
 * (AttachDecap). An outer source must match one. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_BALANCER_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix4);
	__type(value, __u8);
} balancers4 SEC(".maps");

/* balancers6: IPv6 balancer prefix -> 1; written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_BALANCER_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix6);
	__type(value, __u8);
} balancers6 SEC(".maps");

/* decap_dests: one of this host's addresses -> 1; written by the loader.
 * Checked only with DECAP_F_CHECK_DEST. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DECAP_DESTS);
	__type(key, struct trust_dest);
	__type(value, __u8);
} decap_dests SEC(".maps");

/* decap_settings: 0 -> struct trust_config; written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trust_config);
} decap_settings SEC(".maps");

/* decap_stats: enum decap_reason -> packets per CPU; written by xdp_decap. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline int count_decap(enum decap_reason reason, int verdict)
{
	__u32 idx = reason;
	__u64 *n = bpf_map_lookup_elem(&decap_stats, &idx);

	if (n)
		(*n)++;
	return verdict;
}

/* trusted4 returns DECAP_OK when an IPv4 tunnel packet may be
 * decapsulated, or why not. */
static __always_inline enum decap_reason trusted4(const struct iphdr *ip)
{
	struct prefix4 src = {.prefixlen = 32};
	struct trust_dest dst = {.family = 4};
	__u32 zero = 0;
	struct trust_config *cfg;

	__builtin_memcpy(src.addr, &ip->saddr, 4);
	if (!bpf_map_lookup_elem(&balancers4, &src))
		return DECAP_UNTRUSTED_SOURCE;
	cfg = bpf_map_lookup_elem(&decap_settings, &zero);
	if (!cfg || !(cfg->flags & DECAP_F_CHECK_DEST))
		return DECAP_OK;
	__builtin_memcpy(dst.addr, &ip->daddr, 4);
	if (!bpf_map_lookup_elem(&decap_dests, &dst))
		return DECAP_WRONG_DEST;
	return DECAP_OK;
}

/* trusted6 is trusted4 for an IPv6 tunnel packet. */
static __always_inline enum decap_reason trusted6(const struct ipv6hdr *ip6)
{
	struct prefix6 src = {.prefixlen = 128};
	struct trust_dest dst = {.family = 6};
	__u32 zero = 0;
	struct trust_config *cfg;

	__builtin_memcpy(src.addr, &ip6->saddr, 16);
	if (!bpf_map_lookup_elem(&balancers6, &src))
		return DECAP_UNTRUSTED_SOURCE;
	cfg = bpf_map_lookup_elem(&decap_settings, &zero);
	if (!cfg || !(cfg->flags & DECAP_F_CHECK_DEST))
		return DECAP_OK;
	__builtin_memcpy(dst.addr, &ip6->daddr, 16);
	if (!bpf_map_lookup_elem(&decap_dests, &dst))
		return DECAP_WRONG_DEST;
	return DECAP_OK;
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of xdp_lb. Each says key -> value and who writes it. */
#ifndef XLB_MAPS_H
#define XLB_MAPS_H

#include "structs.h"

/* vips: struct vip_key -> struct vip_meta; written by the loader (PutVIP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

/* backends: backend ID -> struct backend; written by the loader
 * (PutBackend). ID 0 stays empty: it marks an empty table slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* flows: struct flow_key -> struct flow; written by xdp_lb, which
 * remembers the backend chosen for each flow. Global LRU (one table for all
 * CPUs); the loader sets max_entries from Options.FlowTableSize. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

/* vip_filter: word index -> 64 bits; bit (vip_addr_hash(addr) % 65536) is
 * set when some VIP has that address. Written by the loader (PutVIP sets a
 * bit before the VIP exists, RemoveVIP clears it after the VIP is gone).
 * Lets a packet that is not for a VIP leave after one array read. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VIP_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

/* flow_cache: cache_slot(5-tuple) -> struct flow_cache_slot, a copy
 * of a flow's entry in flows; written by xdp_lb (flowcache.h), cleared by
 * the loader for the flows of a removed VIP. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} flow_cache SEC(".maps");

/* egress: 0 -> ifindex of the interface towards the backends, when it is
 * not the receiving one (CONFIG_F_REDIRECT); written by the loader
 * (SetConfig). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} egress SEC(".maps");

/* settings: 0 -> struct config; written by the loader (SetConfig). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

/* tables_N: VIP ID -> one-entry array whose value is the VIP's whole Maglev
 * table of N slots (a backend ID per slot); written by the loader
 * (SetTable), which builds a new inner map and swaps it in. One outer map
 * per supported size, since inner maps share one value size. The outer map
 * is an array indexed by VIP ID: the verifier inlines its lookup (an
 * index, no hash and no helper call), which a hash of maps costs on every
 * new flow. The value size is declared with __uint: a struct used only
 * here would reach BTF as a forward declaration. */
#define TABLE_MAP(N)                                                    \
	struct table_inner_##N {                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, 1);                                 \
		__type(key, __u32);                                     \
		__uint(value_size, (N) * sizeof(__u32));                \
	};                                                              \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);               \
		__uint(max_entries, MAX_VIPS);                          \
		__type(key, __u32);                                     \
		__array(values, struct table_inner_##N);                \
	} tables_##N SEC(".maps")

TABLE_MAP(251);
TABLE_MAP(4093);
TABLE_MAP(65537);

/* vip_retired: VIP ID -> the counters of the backends removed from the
 * VIP; written by the loader only. xdp_lb counts per backend, and backend
 * IDs are per VIP, so a VIP's traffic is this plus its backends' counters:
 * one counter update per packet instead of two. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct counters);
} vip_retired SEC(".maps");

/* backend_stats: backend ID -> struct counters per CPU; written by xdp_lb. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct counters);
} backend_stats SEC(".maps");

/* exits: enum exit_reason -> packets per CPU; written by xdp_lb. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EXIT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} exits SEC(".maps");

/* icmp_limits: 0 -> struct icmp_limit; written by the loader (SetConfig). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_limit);
} icmp_limits SEC(".maps");

/* icmp_budgets: 0 -> struct icmp_budget per CPU; written by xdp_lb, the
 * token bucket that limits the ICMP errors each CPU sends (icmp.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_budget);
} icmp_budgets SEC(".maps");

static __always_inline void count(void *map, __u32 idx, __u64 bytes)
{
	struct counters *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline int count_exit(enum exit_reason reason, int verdict)
{
	__u32 idx = reason;
	__u64 *n = bpf_map_lookup_elem(&exits, &idx);

	if (n)
		(*n)++;
	return verdict;
}

#endif

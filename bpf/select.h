/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* VIP lookup and backend selection: the flow table first, the VIP's Maglev
 * table when the flow is new, a TCP SYN, or its backend is no longer usable
 * for established flows. */
#ifndef XLB_SELECT_H
#define XLB_SELECT_H

#include "maps.h"
#include "hash.h"
#include "parse.h"

/* lookup_vip tries (address, port, protocol), then the port wildcard. */
static __always_inline struct vip_meta *lookup_vip(const struct packet *p)
{
	struct vip_key vk = {};
	struct vip_meta *vip;

	__builtin_memcpy(vk.addr, p->key.dst, 16);
	vk.port = p->key.dport;
	vk.proto = p->key.proto;
	vk.family = p->key.family;
	vip = bpf_map_lookup_elem(&vips, &vk);
	if (vip)
		return vip;
	vk.port = 0;
	return bpf_map_lookup_elem(&vips, &vk);
}

static __always_inline struct backend *lookup_backend(__u32 id)
{
	return bpf_map_lookup_elem(&backends, &id);
}

/* TABLE_SLOT reads slot hash % N of the VIP's table in tables_N. The empty
 * asm keeps clang from folding the bounds check the verifier needs. */
#define TABLE_SLOT(N, id, hash)                                         \
	({                                                              \
		__u32 _slot = 0, _zero = 0, _idx = (hash) % (N);        \
		void *_inner = bpf_map_lookup_elem(&tables_##N, &(id)); \
		__u32 *_t = _inner ? bpf_map_lookup_elem(_inner, &_zero) : 0; \
		asm volatile("" : "+r"(_idx));                          \
		if (_t && _idx < (N))                                   \
			_slot = _t[_idx];                               \
		_slot;                                                  \
	})

/* table_slot returns the backend ID in the VIP's table for hash; 0 when
 * the VIP has no table. */
static __always_inline __u32 table_slot(const struct vip_meta *vip, __u32 hash)
{
	__u32 id = vip->id;

	switch (vip->table_size) {
	case 251:
		return TABLE_SLOT(251, id, hash);
	case 4093:
		return TABLE_SLOT(4093, id, hash);
	case 65537:
		return TABLE_SLOT(65537, id, hash);
	}
	return 0;
}

/* established_backend returns the flow's remembered backend if it may keep
 * the flow; for UDP the flow must also have been seen within the timeout. */
static __always_inline struct backend *
established_backend(const struct packet *p, struct flow *f,
		    const struct config *cfg, __u32 *id, __u32 *hash)
{
	struct backend *be;
	__u64 now;

	be = lookup_backend(f->backend_id);
	if (!be || !(be->flags & BACKEND_F_USABLE_ESTABLISHED))
		return 0;
	if (p->key.proto == IPPROTO_UDP) {
		now = bpf_ktime_get_ns();
		if (now - f->last_seen > cfg->udp_timeout_ns)
			return 0;
		if (!(p->flags & PKT_PTB))
			f->last_seen = now;
	}
	*id = f->backend_id;
	*hash = f->hash;
	return be;
}

/* select_backend picks the backend for p and records it in the flow table
 * (except for ICMP errors, which only follow a flow). */
static __always_inline struct backend *
select_backend(const struct packet *p, const struct vip_meta *vip,
	       const struct config *cfg, __u32 *id, __u32 *hash)
{
	struct flow *f = bpf_map_lookup_elem(&flows, &p->key);
	struct backend *be;
	struct flow nf;
	__u32 slot_hash;

	if (f && !(p->flags & PKT_SYN)) {
		be = established_backend(p, f, cfg, id, hash);
		if (be)
			return be;
	}
	*hash = flow_hash(&p->key, cfg->hash_seed, 0);
	slot_hash = *hash;
	if (vip->flags & VIP_F_HASH_SRC_ONLY)
		slot_hash = flow_hash(&p->key, cfg->hash_seed, 1);
	*id = table_slot(vip, slot_hash);
	be = lookup_backend(*id);
	if (!be || !(be->flags & BACKEND_F_USABLE_NEW))
		return 0;
	if (p->flags & PKT_PTB)
		return be;
	nf.backend_id = *id;
	nf.hash = *hash;
	nf.last_seen = p->key.proto == IPPROTO_UDP ? bpf_ktime_get_ns() : 0;
	if (f)
		*f = nf;
	else
		bpf_map_update_elem(&flows, &p->key, &nf, BPF_ANY);
	return be;
}

#endif

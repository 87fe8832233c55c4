/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* VIP lookup and backend selection. A packet of an established flow finds
 * its backend (and VIP) in the flow table; a new flow, a TCP SYN, or a flow
 * whose backend is no longer usable for established flows selects through
 * the VIP's Maglev table. A SYN's choice goes to the flow cache only, marked
 * pending; the flow's next packet puts it into the flow table
 * (flowcache.h). */
#ifndef XLB_SELECT_H
#define XLB_SELECT_H

#include "maps.h"
#include "hash.h"
#include "parse.h"
#include "flowcache.h"

/* maybe_vip is false when no VIP has the packet's destination address. */
static __always_inline int maybe_vip(const struct packet *p)
{
	__u32 bit = vip_addr_hash(&p->key);
	__u32 word = bit / 64;
	__u64 *w = bpf_map_lookup_elem(&vip_filter, &word);

	return w && (*w & (1ULL << (bit % 64)));
}

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

/* established_backend fills c from the flow's entry if its backend may keep
 * the flow; for UDP the flow must also have been seen within the timeout. */
static __always_inline int established_backend(const struct packet *p,
					       struct flow *f,
					       const struct config *cfg,
					       struct choice *c)
{
	struct backend *be = lookup_backend(f->backend_id);
	__u64 now;

	c->be = be;
	if (!be || !(be->flags & BACKEND_F_USABLE_ESTABLISHED))
		return 0;
	if (p->key.proto == IPPROTO_UDP) {
		now = bpf_ktime_get_ns();
		if (now - f->last_seen > cfg->udp_timeout_ns)
			return 0;
		if (!(p->flags & PKT_PTB))
			f->last_seen = now;
	}
	c->backend_id = f->backend_id;
	c->hash = f->hash;
	c->mode = f->mode;
	return 1;
}

/* cache_established fills c from the cache if p's flow is there and its
 * copy of the backend is current (gen); for UDP the flow must have been seen
 * within the timeout, and the slot's last-seen time is refreshed. */
static __always_inline int cache_established(const struct packet *p,
					     struct flow_cache_slot *s,
					     const struct config *cfg,
					     __u32 gen, struct choice *c)
{
	__u64 last_seen, now;

	if (!cache_get(s, &p->key, gen, c, &last_seen))
		return 0;
	if (p->key.proto == IPPROTO_UDP) {
		now = bpf_ktime_get_ns();
		if (now - last_seen > cfg->udp_timeout_ns)
			return 0;
		if (!(p->flags & PKT_PTB))
			s->last_seen = now;
	}
	cache_touch(s, &p->key);
	return 1;
}

/* select_new picks a backend from the VIP's table and records it: in the
 * flow table and the flow cache, or for a TCP SYN in the flow cache only,
 * pending (flowcache.h); ICMP errors only follow a flow, and datagrams of
 * a stateless VIP only follow the table: they record nothing.
 * f is the flow's current entry, if any. */
static __always_inline int select_new(const struct packet *p,
				      const struct vip_meta *vip,
				      const struct config *cfg, __u32 gen,
				      struct flow *f, struct choice *c)
{
	struct flow_cache_slot *s;
	struct flow nf = {};
	struct backend *be;
	__u32 slot_hash;
	__u8 flags = 0;

	c->hash = flow_hash(&p->key, cfg->hash_seed, 0);
	slot_hash = c->hash;
	if (vip->flags & VIP_F_HASH_SRC_ONLY)
		slot_hash = flow_hash(&p->key, cfg->hash_seed, 1);
	c->backend_id = table_slot(vip, slot_hash);
	be = lookup_backend(c->backend_id);
	c->be = be;
	if (!be || !(be->flags & BACKEND_F_USABLE_NEW))
		return 0;
	c->mode = vip->mode;
	if (p->flags & PKT_PTB || vip->flags & VIP_F_STATELESS)
		return 1;
	nf.backend_id = c->backend_id;
	nf.hash = c->hash;
	nf.vip_id = vip->id;
	nf.mode = c->mode;
	if (p->key.proto == IPPROTO_UDP)
		nf.last_seen = bpf_ktime_get_ns();
	if (p->flags & PKT_SYN)
		flags = SLOT_F_PENDING;
	else if (f)
		*f = nf;
	else
		bpf_map_update_elem(&flows, &p->key, &nf, BPF_ANY);
	s = cache_slot(&p->key);
	if (s)
		cache_put(s, &p->key, &nf, be, gen, flags);
	return 1;
}

#endif

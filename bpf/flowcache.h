/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow cache: a direct-mapped array in front of the LRU flow table. An array read is inlined by the verifier, needs no kernel hash
 * and touches one cache line, where an LRU hash lookup costs a call, a
 * bucket and an element. The LRU table stays the record of every flow; the
 * cache holds a copy of the entries of recently seen flows, at a slot
 * chosen by a cheap hash of the key, and a colliding flow replaces it.
 *
 * Slots are shared by all CPUs. A writer takes a slot by moving its
 * sequence number from even to odd with a compare-and-swap (a busy slot is
 * left alone) and makes it even again when done; a reader uses the copy only
 * if the sequence number was even and unchanged around its reads. For UDP
 * the slot's last-seen time is the newest (refreshed by readers with a plain
 * store) and is written back to the flow table when the slot is taken by
 * another flow.
 *
 * A slot also carries a copy of its backend's address and next hop, valid
 * while the slot's generation equals the config's: the loader bumps that
 * generation after every backend write (usability, address, MAC), so a
 * copy taken before a change is never used after it, and the flow goes
 * through the flow table and the backend map again. Readers read the
 * generation before reading a backend. The loader also bumps it when it
 * deletes a VIP's flows (the VIP removed, or its ID or mode changed): a hit
 * is forwarded before the VIP filter is read, and a flow the flow table
 * has evicted may still have a slot.
 *
 * A TCP SYN records its choice here only, marked pending, and not in the
 * flow table: a SYN flood (spoofed sources that never answer) then churns
 * this cache, which only holds copies, and never evicts established flows
 * from the flow table. The flow's first packet after the SYN (the
 * handshake's ACK) finds the pending slot, inserts the flow into the flow
 * table and clears the mark: the insert moves from the SYN to that packet.
 * A pending slot whose generation is stale still names the flow's backend
 * (cache_pending), so a backend that starts draining between SYN and ACK
 * keeps the handshake, as the flow table would. A pending slot another flow
 * took before the ACK came is lost: the ACK selects again through the
 * Maglev table, which names the same backend unless the table changed. */
#ifndef XLB_FLOWCACHE_H
#define XLB_FLOWCACHE_H

#include "maps.h"
#include "hash.h"
#include "parse.h"

/* A flow served from the cache looks its flow table entry up every
 * CACHE_TOUCH_EVERY hits (a power of two): the lookup marks the LRU entry
 * referenced, so that under flow table pressure the LRU evicts idle flows
 * before busy ones that only the cache sees. A flow that gets that many
 * packets while the LRU takes in as many new flows as it holds stays. The
 * lookup of a large table misses the CPU caches: one every 64th hit cost
 * 2-3 ns per established packet on average in the packet-rate rig. */
#define CACHE_TOUCH_EVERY 1024

#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))
#define barrier() asm volatile("" ::: "memory")

/* cache_slot returns the flow's slot: the xor of the key's five 64-bit
 * words, multiplied by 2^64 / golden ratio, top FLOW_CACHE_BITS bits. A
 * local index only (not the seeded flow hash that balancers share): a few
 * instructions where lookup3 takes a hundred, which measurably matters on
 * the established path. */
static __always_inline struct flow_cache_slot *
cache_slot(const struct flow_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u64 x = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4];
	__u32 idx = (x * 0x9e3779b97f4a7c15ULL) >> (64 - FLOW_CACHE_BITS);

	return bpf_map_lookup_elem(&flow_cache, &idx);
}

static __always_inline int same_key(const struct flow_key *a,
				    const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] &&
	       x[4] == y[4];
}

/* choice is where a packet goes: filled from the flow cache, the flow
 * table or the VIP's Maglev table (select.h). */
struct choice {
	const struct backend *be;	/* a backends entry or &copy */
	struct backend copy;		/* the flow cache's copy */
	__u32 backend_id;
	__u32 hash;		/* the flow's 5-tuple hash */
	__u8 mode;
	__u8 pending;		/* from a pending slot: not in the flow table */
};

/* cache_get fills c from slot s, its backend with the slot's copy, and
 * *last_seen with the slot's last-seen time; 0 on a miss or when the copy
 * is older than generation gen (some backend changed since). */
static __always_inline int cache_get(const struct flow_cache_slot *s,
				     const struct flow_key *key, __u32 gen,
				     struct choice *c, __u64 *last_seen)
{
	__u32 seq = READ_ONCE_U32(s->seq);

	if (seq & 1)
		return 0;
	barrier();
	if (s->gen != gen || !same_key(&s->key, key))
		return 0;
	c->backend_id = s->backend_id;
	c->hash = s->hash;
	c->mode = s->mode;
	c->pending = s->flags & SLOT_F_PENDING;
	*last_seen = s->last_seen;
	c->copy = s->backend;
	c->be = &c->copy;
	barrier();
	return READ_ONCE_U32(s->seq) == seq;
}

/* write_back gives a UDP flow pushed out of the cache its last-seen time
 * in the flow table, which the cache kept newer. A slot no packet hit since
 * it was filled holds the flow table's own time: a new UDP flow replacing
 * another new one (each DNS query from its own port) then costs no flow
 * table lookup. */
static __always_inline void write_back(const struct flow_cache_slot *s)
{
	struct flow *f;

	if (s->key.proto != IPPROTO_UDP || !s->hits)
		return;
	f = bpf_map_lookup_elem(&flows, &s->key);
	if (f && f->backend_id == s->backend_id && f->last_seen < s->last_seen)
		f->last_seen = s->last_seen;
}

/* cache_touch counts a hit of slot s, the cached entry of key, and every
 * CACHE_TOUCH_EVERY hits looks the flow up in the flow table, which marks
 * its LRU entry referenced. The count is a plain increment: racing CPUs
 * may lose some, which only spaces the touches further. */
static __always_inline void cache_touch(struct flow_cache_slot *s,
					const struct flow_key *key)
{
	__u32 hits = s->hits + 1;

	s->hits = hits;
	if (!(hits & (CACHE_TOUCH_EVERY - 1)))
		bpf_map_lookup_elem(&flows, key);
}

/* slot_take makes this CPU slot s's writer: its sequence number from even
 * to odd. 0 when another CPU is writing it (the slot is left alone). */
static __always_inline int slot_take(struct flow_cache_slot *s)
{
	__u32 seq = READ_ONCE_U32(s->seq);

	if (seq & 1)
		return 0;
	return __sync_val_compare_and_swap(&s->seq, seq, seq + 1) == seq;
}

/* slot_release ends a write slot_take began: the sequence number even. */
static __always_inline void slot_release(struct flow_cache_slot *s)
{
	__sync_fetch_and_add(&s->seq, 1);
}

/* cache_put stores f and its backend be, read at generation gen, as the
 * cached entry of key with flags (SLOT_F_*), unless another CPU is writing
 * the slot. */
static __always_inline void cache_put(struct flow_cache_slot *s,
				      const struct flow_key *key,
				      const struct flow *f,
				      const struct backend *be, __u32 gen,
				      __u8 flags)
{
	if (!slot_take(s))
		return;
	if (!same_key(&s->key, key))
		write_back(s);
	__builtin_memcpy(&s->key, key, sizeof(*key));
	s->backend_id = f->backend_id;
	s->hash = f->hash;
	s->vip_id = f->vip_id;
	s->mode = f->mode;
	s->flags = flags;
	s->hits = 0;
	s->last_seen = f->last_seen;
	s->backend = *be;
	s->gen = gen;
	slot_release(s);
}

/* cache_pending fills f from slot s if s holds key's pending SYN choice,
 * whatever its generation (the caller looks the backend up again). */
static __always_inline int cache_pending(const struct flow_cache_slot *s,
					 const struct flow_key *key,
					 struct flow *f)
{
	__u32 seq = READ_ONCE_U32(s->seq);

	if (seq & 1)
		return 0;
	barrier();
	if (!(s->flags & SLOT_F_PENDING) || !same_key(&s->key, key))
		return 0;
	f->backend_id = s->backend_id;
	f->hash = s->hash;
	f->vip_id = s->vip_id;
	f->mode = s->mode;
	f->last_seen = 0;
	barrier();
	return READ_ONCE_U32(s->seq) == seq;
}

/* cache_commit inserts key's flow, pending in slot s, into the flow table
 * and clears the mark. When another CPU holds the slot nothing happens: the
 * mark stays, and a later packet of the flow inserts it. */
static __always_inline void cache_commit(struct flow_cache_slot *s,
					 const struct flow_key *key)
{
	struct flow f = {};

	if (!slot_take(s))
		return;
	if ((s->flags & SLOT_F_PENDING) && same_key(&s->key, key)) {
		f.backend_id = s->backend_id;
		f.hash = s->hash;
		f.vip_id = s->vip_id;
		f.mode = s->mode;
		if (!bpf_map_update_elem(&flows, key, &f, BPF_ANY))
			s->flags &= ~SLOT_F_PENDING;
	}
	slot_release(s);
}

#endif

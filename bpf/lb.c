// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_lb: the balancer. Parse; an established flow in the flow cache is
 * forwarded at once (the first packet after a SYN also puts the flow into
 * the flow table); otherwise leave when no VIP has the destination address
 * (VIP filter); an established flow goes where the flow table says; anything
 * else looks the VIP up and picks a backend in its Maglev table (a
 * stateless UDP VIP's datagrams only that, recording nothing). Forward with
 * IPIP or L2 DSR, out of the same interface (XDP_TX) or an egress one
 * (devmap); a packet too big for the path to the backends is answered with
 * ICMP "too big" (icmp.h). Anything that is not for a VIP goes to the kernel untouched. */
#include "common.h"
#include "maps.h"
#include "parse.h"
#include "select.h"
#include "encap.h"
#include "icmp.h"

static __always_inline __u32 encap_overhead(const struct packet *p)
{
	return p->key.family == FAMILY_V4 ? sizeof(struct iphdr)
					  : sizeof(struct ipv6hdr);
}

/* forward_check returns why p cannot go to c, or EXIT_NONE. */
static __always_inline enum exit_reason
forward_check(const struct packet *p, const struct choice *c,
	      const struct config *cfg)
{
	if (c->be->family != p->key.family)
		return EXIT_BAD_BACKEND;
	if (c->mode == MODE_L2DSR)
		return p->l3_len > cfg->mtu ? EXIT_TOO_BIG : EXIT_NONE;
	/* Too big to encapsulate: answered with ICMP "too big" (icmp.h). */
	if (p->l3_len + encap_overhead(p) > cfg->mtu)
		return EXIT_TOO_BIG;
	if (!(cfg->flags & (p->key.family == FAMILY_V4 ? CONFIG_F_SRC4
						      : CONFIG_F_SRC6)))
		return EXIT_NO_SOURCE;
	return EXIT_NONE;
}

/* rewrite applies the VIP's mode to the packet; XDP_TX when done. */
static __always_inline int rewrite(struct xdp_md *ctx, const struct packet *p,
				   const struct choice *c,
				   const struct config *cfg)
{
	if (c->mode == MODE_L2DSR)
		return rewrite_l2(ctx, p, c->be, cfg);
	if (p->key.family == FAMILY_V4)
		return encap_ipv4(ctx, p, c->be, cfg, c->hash);
	return encap_ipv6(ctx, p, c->be, cfg, c->hash);
}

/* forward counts p and sends it to the chosen backend: back out of the
 * receiving interface, or through the egress devmap when configured. */
static __always_inline int forward(struct xdp_md *ctx, const struct packet *p,
				   const struct choice *c,
				   const struct config *cfg, __u64 bytes)
{
	enum exit_reason reason = forward_check(p, c, cfg);
	int verdict;

	if (reason == EXIT_TOO_BIG)
		return too_big(ctx, p, cfg, c->mode);
	/* Drop: the packet is for a VIP but cannot be delivered (see the
	 * reasons in forward_check). */
	if (reason)
		return count_exit(reason, XDP_DROP);
	count(&backend_stats, c->backend_id, bytes);
	verdict = rewrite(ctx, p, c, cfg);
	if (verdict == XDP_TX && (cfg->flags & CONFIG_F_REDIRECT))
		return bpf_redirect_map(&egress, 0, XDP_TX);
	return verdict;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - data;
	struct packet p = {};
	struct choice c;
	struct vip_meta *vip;
	struct config *cfg;
	struct flow_cache_slot *slot = 0;
	struct flow *f, *e, pf;
	__u32 zero = 0, gen;
	int ret;

	ret = parse_packet(&p, data, end);
	if (ret)
		return count_exit(ret, XDP_PASS);
	cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg)
		return count_exit(EXIT_NO_BACKEND, XDP_DROP); /* never: array */
	/* The generation is read before any backend (flowcache.h). */
	gen = READ_ONCE_U32(cfg->gen);
	barrier();
	/* Fast path: an established flow (not a SYN, which selects again
	 * without looking, and no IPv4 options) in the flow cache. The cache
	 * holds only flows of VIPs, and removing a VIP bumps the generation,
	 * so a hit needs no VIP filter. */
	f = 0;
	if (!(p.flags & (PKT_SYN | PKT_IP_OPTIONS))) {
		slot = cache_slot(&p.key);
		if (slot && cache_established(&p, slot, cfg, gen, &c)) {
			if (c.pending && !(p.flags & PKT_PTB))
				cache_commit(slot, &p.key);
			goto send;
		}
	}
	if (!maybe_vip(&p))
		return count_exit(EXIT_NO_VIP, XDP_PASS);
	/* While some VIP is stateless, a UDP datagram looks its VIP up first:
	 * a stateless VIP's datagrams have no flow to look for. */
	vip = 0;
	if (p.key.proto == IPPROTO_UDP && (cfg->flags & CONFIG_F_STATELESS)) {
		vip = lookup_vip(&p);
		if (!vip)
			return count_exit(EXIT_NO_VIP, XDP_PASS);
	}
	/* Then the flow table. */
	if (!(p.flags & (PKT_SYN | PKT_IP_OPTIONS)) &&
	    !(vip && (vip->flags & VIP_F_STATELESS))) {
		f = bpf_map_lookup_elem(&flows, &p.key);
		e = f;
		/* Or a SYN's pending choice read at an older generation: its
		 * backend may keep the flow as a flow table entry would. */
		if (!f && slot && cache_pending(slot, &p.key, &pf))
			e = &pf;
		if (e && established_backend(&p, e, cfg, &c)) {
			if (slot && !(p.flags & PKT_PTB)) {
				if (!f)
					bpf_map_update_elem(&flows, &p.key, e, BPF_ANY);
				cache_put(slot, &p.key, e, c.be, gen, 0);
			}
			goto send;
		}
	}

	if (!vip)
		vip = lookup_vip(&p);
	if (!vip)
		return count_exit(EXIT_NO_VIP, XDP_PASS);
	/* IPv4 options (source routing, ...) are not carried to backends. */
	if (p.flags & PKT_IP_OPTIONS)
		return count_exit(EXIT_IP_OPTIONS, XDP_DROP);
	/* Drop: the VIP has no table, the slot is empty, or its backend is
	 * not usable for new flows. */
	if (!select_new(&p, vip, cfg, gen, f, &c))
		return count_exit(EXIT_NO_BACKEND, XDP_DROP);
send:
	/* One call site: forward() and the rewrites it inlines are emitted
	 * once, which keeps the program's code (and the pages a packet's path
	 * touches) small. */
	return forward(ctx, &p, &c, cfg, bytes);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

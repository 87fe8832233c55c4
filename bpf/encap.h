/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding: L2 DSR (Ethernet rewrite) and IPIP / IP6IP6 encapsulation.
 * They run after the decision to forward; a failure once the packet has
 * been changed is XDP_ABORTED. */
#ifndef XLB_ENCAP_H
#define XLB_ENCAP_H

#include "csum.h"
#include "hash.h"
#include "maps.h"
#include "parse.h"

/* write_eth writes the Ethernet header (and the VLAN tag the packet came
 * with) at data: destination the backend's next hop, source the balancer. */
static __always_inline int write_eth(void *data, void *end,
				     const struct packet *p,
				     const struct backend *be,
				     const struct config *cfg)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;

	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src_mac, ETH_ALEN);
	if (!p->tpid) {
		eth->h_proto = p->h_proto;
		return 0;
	}
	eth->h_proto = p->tpid;
	vlan = (void *)(eth + 1);
	if ((void *)(vlan + 1) > end)
		return -1;
	vlan->tci = p->tci;
	vlan->encap_proto = p->h_proto;
	return 0;
}

static __always_inline __u32 l2_len(const struct packet *p)
{
	return p->tpid ? sizeof(struct ethhdr) + sizeof(struct vlan_hdr)
		       : sizeof(struct ethhdr);
}

/* encap_ipv4 prepends an IPv4 header (protocol 4) towards the backend. */
static __always_inline int encap_ipv4(struct xdp_md *ctx,
				      const struct packet *p,
				      const struct backend *be,
				      const struct config *cfg, __u32 hash)
{
	void *data, *end;
	struct iphdr *ip;
	__be32 saddr;

	/* Drop: no headroom; nothing was changed yet. */
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return count_exit(EXIT_ENCAP_FAILED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_eth(data, end, p, be, cfg))
		return XDP_ABORTED;
	ip = data + l2_len(p);
	if ((void *)(ip + 1) > end)
		return XDP_ABORTED;
	saddr = cfg->src4 | (hash & cfg->src4_mask);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = p->tos;
	ip->tot_len = bpf_htons(p->l3_len + sizeof(*ip));
	ip->id = 0;
	ip->frag_off = (p->flags & PKT_DF) ? bpf_htons(IPV4_DF) : 0;
	ip->ttl = OUTER_TTL;
	ip->protocol = IPPROTO_IPIP;
	ip->check = 0;
	ip->saddr = saddr;
	__builtin_memcpy(&ip->daddr, be->addr, 4);
	ip->check = ipv4_csum(ip);
	return XDP_TX;
}

/* encap_ipv6 prepends an IPv6 header (next header 41) towards the backend;
 * the flow label carries the flow hash. */
static __always_inline int encap_ipv6(struct xdp_md *ctx,
				      const struct packet *p,
				      const struct backend *be,
				      const struct config *cfg, __u32 hash)
{
	void *data, *end;
	struct ipv6hdr *ip6;
	__be32 low;

	/* Drop: no headroom; nothing was changed yet. */
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct ipv6hdr)))
		return count_exit(EXIT_ENCAP_FAILED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_eth(data, end, p, be, cfg))
		return XDP_ABORTED;
	ip6 = data + l2_len(p);
	if ((void *)(ip6 + 1) > end)
		return XDP_ABORTED;
	ip6->version = 6;
	ip6->priority = p->tos >> 4;
	ip6->flow_lbl[0] = (__u8)(p->tos << 4) | ((hash >> 16) & 0x0f);
	ip6->flow_lbl[1] = hash >> 8;
	ip6->flow_lbl[2] = hash;
	ip6->payload_len = bpf_htons(p->l3_len);
	ip6->nexthdr = IPPROTO_IPV6;
	ip6->hop_limit = OUTER_TTL;
	__builtin_memcpy(&ip6->saddr, cfg->src6, 16);
	low = load32(cfg->src6 + 12) | (hash & cfg->src6_mask);
	__builtin_memcpy((__u8 *)&ip6->saddr + 12, &low, 4);
	__builtin_memcpy(&ip6->daddr, be->addr, 16);
	return XDP_TX;
}

/* rewrite_l2 is L2 DSR: only the Ethernet addresses change. */
static __always_inline int rewrite_l2(struct xdp_md *ctx,
				      const struct packet *p,
				      const struct backend *be,
				      const struct config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (write_eth(data, end, p, be, cfg))
		return XDP_ABORTED;
	return XDP_TX;
}

#endif

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
 * with) at data: destination the backend's next hop, source the balancer.
 * It stores whole words through plain pointers (x86 and the verifier take
 * unaligned packet access; through struct ethhdr, which is packed, clang
 * would store byte by byte); be and cfg are 8-byte aligned, so the loads
 * are aligned. */
static __always_inline int write_eth(void *data, void *end,
				     const struct packet *p,
				     const struct backend *be,
				     const struct config *cfg)
{
	__u8 *d = data;

	if (d + sizeof(struct ethhdr) > (__u8 *)end)
		return -1;
	*(__u32 *)d = *(const __u32 *)be->mac;
	*(__u16 *)(d + 4) = *(const __u16 *)(be->mac + 4);
	*(__u32 *)(d + 6) = *(const __u32 *)cfg->src_mac;
	*(__u16 *)(d + 10) = *(const __u16 *)(cfg->src_mac + 4);
	if (!p->tpid) {
		*(__u16 *)(d + 12) = p->h_proto;
		return 0;
	}
	if (d + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) > (__u8 *)end)
		return -1;
	*(__u16 *)(d + 12) = p->tpid;
	*(__u16 *)(d + 14) = p->tci;
	*(__u16 *)(d + 16) = p->h_proto;
	return 0;
}

static __always_inline __u32 l2_len(const struct packet *p)
{
	return p->tpid ? sizeof(struct ethhdr) + sizeof(struct vlan_hdr)
		       : sizeof(struct ethhdr);
}

/* encap_ipv4 prepends an IPv4 header (protocol 4) towards the backend.
 * The header is built as five 32-bit words (little-endian loads of its
 * bytes), checksummed from them and stored whole: byte stores read back by
 * a checksum loop would stall store-to-load forwarding. */
static __always_inline int encap_ipv4(struct xdp_md *ctx,
				      const struct packet *p,
				      const struct backend *be,
				      const struct config *cfg, __u32 hash)
{
	void *data, *end;
	__u32 *ip, w0, w1, w2, w3, w4;

	/* Drop: no headroom; nothing was changed yet. */
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return count_exit(EXIT_ENCAP_FAILED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_eth(data, end, p, be, cfg))
		return XDP_ABORTED;
	ip = data + l2_len(p);
	if ((void *)(ip + 5) > end)
		return XDP_ABORTED;
	/* version 4, IHL 5, TOS; total length */
	w0 = 0x45 | (__u32)p->tos << 8 |
	     (__u32)bpf_htons(p->l3_len + sizeof(struct iphdr)) << 16;
	/* ID 0; DF copied */
	w1 = (p->flags & PKT_DF) ? (__u32)bpf_htons(IPV4_DF) << 16 : 0;
	/* TTL, protocol; the checksum goes in the high half */
	w2 = OUTER_TTL | IPPROTO_IPIP << 8;
	w3 = cfg->src4 | (hash & cfg->src4_mask);
	w4 = *(const __u32 *)be->addr;
	w2 |= (__u32)csum_words(w0, w1, w2, w3, w4) << 16;
	ip[0] = w0;
	ip[1] = w1;
	ip[2] = w2;
	ip[3] = w3;
	ip[4] = w4;
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

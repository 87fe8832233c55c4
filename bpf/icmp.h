/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP "fragmentation needed" (IPv4) and ICMPv6 "packet too big", built in
 * place of a VIP packet that is too big to forward and sent back to the
 * client with XDP_TX, so that its path MTU discovery lowers the size: a
 * TCP connection then goes on with smaller segments instead of stalling.
 * The error comes from the VIP (the address the client sent to), quotes the
 * start of the client's packet and names the largest packet the client may
 * send: the MTU towards the backends less the outer header. Each CPU sends
 * at most a configured rate (token bucket in icmp_budgets). Not answered
 * (dropped, counted too_big): ICMP errors themselves, IPv4 packets without
 * DF (the sender allows fragmentation, which XDP cannot do), packets shorter
 * than the quote, and everything when the config turns answers off. */
#ifndef XLB_ICMP_H
#define XLB_ICMP_H

#include "csum.h"
#include "encap.h"
#include "maps.h"

/* Bytes of the client's packet quoted, from its IP header on: the IP header
 * and the start of the transport header (ports, sequence number), which is
 * what the client's stack matches the error to. Multiples of 4 (for
 * bpf_csum_diff); an IPv4 error stays far below the 576 bytes RFC 1812
 * allows, an IPv6 one below 1280 (RFC 4443). */
#define ICMP_QUOTE4 64
#define ICMP_QUOTE6 104
#define ICMP4_HDRS (sizeof(struct iphdr) + sizeof(struct icmp_hdr))
#define ICMP6_HDRS (sizeof(struct ipv6hdr) + sizeof(struct icmp_hdr))
#define ICMP_TTL 64

/* icmp_allowed takes one message's cost from this CPU's budget; false when
 * the budget is spent. The budget grows with the time since the last call,
 * up to the burst. */
static __always_inline int icmp_allowed(void)
{
	__u32 zero = 0;
	struct icmp_budget *b = bpf_map_lookup_elem(&icmp_budgets, &zero);
	struct icmp_limit *lim = bpf_map_lookup_elem(&icmp_limits, &zero);
	__u64 now, budget;

	if (!b || !lim)
		return 0;
	now = bpf_ktime_get_ns();
	budget = b->budget_ns + (now - b->last_ns);
	if (budget > lim->burst_ns)
		budget = lim->burst_ns;
	b->last_ns = now;
	if (budget < lim->cost_ns) {
		b->budget_ns = budget;
		return 0;
	}
	b->budget_ns = budget - lim->cost_ns;
	return 1;
}

/* reply_room turns the frame into l2 + hdrs + quote bytes: hdrs new bytes
 * in front (for the error's IP and ICMP headers, in front of which the
 * Ethernet header is written again), the client's packet cut after quote
 * bytes. -1 when the head could not grow (nothing changed), -2 when the
 * tail could not be cut. */
static __always_inline int reply_room(struct xdp_md *ctx,
				      const struct packet *p, int hdrs,
				      int quote)
{
	if (bpf_xdp_adjust_head(ctx, -hdrs))
		return -1;
	/* The whole frame's length: BPF_PROG_RUN hands a long input over in
	 * fragments, and cutting the tail starts from the last one. */
	if (bpf_xdp_adjust_tail(ctx, (int)(l2_len(p) + hdrs + quote) - (int)bpf_xdp_get_buff_len(ctx)))
		return -2;
	return 0;
}

/* write_reply_eth writes the Ethernet header of the answer at data: the
 * addresses of the client's frame, which starts hdrs bytes later (hdrs is
 * larger than an Ethernet header with a VLAN tag: no overlap), swapped;
 * the VLAN tag kept. */
static __always_inline int write_reply_eth(void *data, void *end,
					   const struct packet *p, int hdrs)
{
	__u8 *d = data, *old = (__u8 *)data + hdrs;

	if (old + 12 > (__u8 *)end)
		return -1;
	*(__u32 *)d = *(__u32 *)(old + 6);
	*(__u16 *)(d + 4) = *(__u16 *)(old + 10);
	*(__u32 *)(d + 6) = *(__u32 *)old;
	*(__u16 *)(d + 10) = *(__u16 *)(old + 4);
	if (!p->tpid) {
		*(__u16 *)(d + 12) = p->h_proto;
		return 0;
	}
	*(__u16 *)(d + 12) = p->tpid;
	*(__u16 *)(d + 14) = p->tci;
	*(__u16 *)(d + 16) = p->h_proto;
	return 0;
}

/* icmp4_too_big rewrites the frame into an ICMP "fragmentation needed"
 * from the VIP to the client with next-hop MTU mtu. */
static __always_inline int icmp4_too_big(struct xdp_md *ctx,
					 const struct packet *p, __u32 mtu)
{
	void *data, *end;
	__u32 *ip, w0, w2, w3, w4;
	struct icmp_hdr *icmp;
	int ret;

	ret = reply_room(ctx, p, ICMP4_HDRS, ICMP_QUOTE4);
	/* Drop: no headroom; nothing was changed yet. */
	if (ret == -1)
		return count_exit(EXIT_TOO_BIG, XDP_DROP);
	if (ret)
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_reply_eth(data, end, p, ICMP4_HDRS))
		return XDP_ABORTED;
	ip = data + l2_len(p);
	if ((void *)ip + ICMP4_HDRS + ICMP_QUOTE4 > end)
		return XDP_ABORTED;
	/* version 4, IHL 5, TOS 0; total length; ID 0, no flags; TTL,
	 * protocol, checksum; VIP; client. */
	w0 = 0x45 | (__u32)bpf_htons(ICMP4_HDRS + ICMP_QUOTE4) << 16;
	w2 = ICMP_TTL | IPPROTO_ICMP << 8;
	w3 = load32(p->key.dst);
	w4 = load32(p->key.src);
	w2 |= (__u32)csum_words(w0, 0, w2, w3, w4) << 16;
	ip[0] = w0;
	ip[1] = 0;
	ip[2] = w2;
	ip[3] = w3;
	ip[4] = w4;
	icmp = (void *)(ip + 5);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->rest = bpf_htonl(mtu & 0xffff);	/* unused 16 bits, next-hop MTU */
	icmp->checksum = csum_fold((__u32)bpf_csum_diff(0, 0, (void *)icmp, sizeof(*icmp) + ICMP_QUOTE4, 0));
	return count_exit(EXIT_ICMP_TOO_BIG, XDP_TX);
}

/* icmp6_too_big rewrites the frame into an ICMPv6 "packet too big" from
 * the VIP to the client with MTU mtu. */
static __always_inline int icmp6_too_big(struct xdp_md *ctx,
					 const struct packet *p, __u32 mtu)
{
	void *data, *end;
	struct ipv6hdr *ip6;
	struct icmp_hdr *icmp;
	__u64 sum;
	int ret;

	ret = reply_room(ctx, p, ICMP6_HDRS, ICMP_QUOTE6);
	/* Drop: no headroom; nothing was changed yet. */
	if (ret == -1)
		return count_exit(EXIT_TOO_BIG, XDP_DROP);
	if (ret)
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_reply_eth(data, end, p, ICMP6_HDRS))
		return XDP_ABORTED;
	ip6 = data + l2_len(p);
	if ((void *)ip6 + ICMP6_HDRS + ICMP_QUOTE6 > end)
		return XDP_ABORTED;
	*(__u32 *)ip6 = bpf_htonl(6 << 28);	/* version; class and label 0 */
	ip6->payload_len = bpf_htons(sizeof(*icmp) + ICMP_QUOTE6);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = ICMP_TTL;
	__builtin_memcpy(&ip6->saddr, p->key.dst, 16);
	__builtin_memcpy(&ip6->daddr, p->key.src, 16);
	icmp = (void *)(ip6 + 1);
	icmp->type = ICMPV6_PKT_TOOBIG;
	icmp->code = 0;
	icmp->checksum = 0;
	icmp->rest = bpf_htonl(mtu);
	/* The pseudo-header: addresses, upper-layer length, next header. */
	sum = (__u32)bpf_csum_diff(0, 0, (void *)&ip6->saddr, 32, 0);
	sum += bpf_htonl(sizeof(*icmp) + ICMP_QUOTE6);
	sum += bpf_htonl(IPPROTO_ICMPV6);
	sum += (__u32)bpf_csum_diff(0, 0, (void *)icmp, sizeof(*icmp) + ICMP_QUOTE6, 0);
	icmp->checksum = csum_fold(sum);
	return count_exit(EXIT_ICMP_TOO_BIG, XDP_TX);
}

/* too_big answers a VIP packet that cannot be forwarded because it is too
 * big for the path to the backends in the VIP's mode, or drops it (see the
 * top of this file). A function of its own: the established path does not
 * carry its code. */
static __noinline int too_big(struct xdp_md *ctx, const struct packet *p,
			      const struct config *cfg, __u8 mode)
{
	__u32 mtu = cfg->mtu;

	/* Drop: answers are off, or not wanted for this packet. */
	if (!(cfg->flags & CONFIG_F_ICMP_TOO_BIG) || (p->flags & PKT_PTB) ||
	    (p->key.family == FAMILY_V4 && !(p->flags & PKT_DF)))
		return count_exit(EXIT_TOO_BIG, XDP_DROP);
	if (mode != MODE_L2DSR)
		mtu -= p->key.family == FAMILY_V4 ? sizeof(struct iphdr)
						  : sizeof(struct ipv6hdr);
	if (p->key.family == FAMILY_V4) {
		/* Drop: too short to quote (an MTU below any real one). */
		if (p->l3_len < ICMP_QUOTE4)
			return count_exit(EXIT_TOO_BIG, XDP_DROP);
		/* Drop: this CPU's ICMP budget is spent. */
		if (!icmp_allowed())
			return count_exit(EXIT_ICMP_LIMITED, XDP_DROP);
		return icmp4_too_big(ctx, p, mtu);
	}
	if (p->l3_len < ICMP_QUOTE6)
		return count_exit(EXIT_TOO_BIG, XDP_DROP);
	if (!icmp_allowed())
		return count_exit(EXIT_ICMP_LIMITED, XDP_DROP);
	/* A host takes no MTU below 1280 for IPv6 (RFC 8201). */
	if (mtu < IPV6_MIN_MTU)
		mtu = IPV6_MIN_MTU;
	return icmp6_too_big(ctx, p, mtu);
}

#endif

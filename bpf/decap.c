// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_decap: for backend hosts. Strips the outer header of IPv4-in-IPv4
 * (protocol 4) and IPv6-in-IPv6 (next header 41) packets from a balancer
 * and passes the inner packet to the kernel, which has no ipip module here.
 * A tunnel packet from outside the balancer prefixes (or, when configured,
 * to another address than this host's) is dropped and counted (trust.h).
 * Everything else passes untouched. */
#include "common.h"
#include "parse.h"
#include "trust.h"

/* outer_len returns the length of an IPIP or IP6IP6 outer header at l3,
 * or 0 when the packet is no such tunnel packet. */
static __always_inline int outer_len(const struct packet *p, void *l3,
				     void *end)
{
	struct iphdr *ip = l3;
	struct ipv6hdr *ip6 = l3;

	if (p->h_proto == ETH_P_IP_BE) {
		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5)
			return 0;
		if (ip->protocol != IPPROTO_IPIP ||
		    ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET))
			return 0;
		return sizeof(*ip);
	}
	if ((void *)(ip6 + 1) > end || ip6->version != 6)
		return 0;
	if (ip6->nexthdr != IPPROTO_IPV6)
		return 0;
	return sizeof(*ip6);
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct packet p = {};
	struct ethhdr *eth;
	void *pos = data;
	enum decap_reason why;
	int olen;

	if (parse_eth(&p, &pos, end))
		return XDP_PASS;
	olen = outer_len(&p, pos, end);
	if (!olen)
		return XDP_PASS;
	/* Drop: not from a balancer, or not to this host (trust.h). */
	why = olen == sizeof(struct iphdr) ? trusted4(pos) : trusted6(pos);
	if (why != DECAP_OK)
		return count_decap(why, XDP_DROP);
	/* Move the Ethernet header (and VLAN tag) forward over the outer IP
	 * header, then drop the bytes in front of it. */
	eth = data;
	if (olen == sizeof(struct iphdr)) {
		if (data + sizeof(struct iphdr) + sizeof(*eth) + sizeof(struct vlan_hdr) > end)
			return XDP_PASS;
		if (p.tpid)
			__builtin_memmove(data + sizeof(struct iphdr), data, sizeof(*eth) + sizeof(struct vlan_hdr));
		else
			__builtin_memmove(data + sizeof(struct iphdr), data, sizeof(*eth));
	} else {
		if (data + sizeof(struct ipv6hdr) + sizeof(*eth) + sizeof(struct vlan_hdr) > end)
			return XDP_PASS;
		if (p.tpid)
			__builtin_memmove(data + sizeof(struct ipv6hdr), data, sizeof(*eth) + sizeof(struct vlan_hdr));
		else
			__builtin_memmove(data + sizeof(struct ipv6hdr), data, sizeof(*eth));
	}
	if (bpf_xdp_adjust_head(ctx, olen))
		return XDP_ABORTED;
	return count_decap(DECAP_OK, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

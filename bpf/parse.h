/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing: every access is bounds-checked against data_end. A parse
 * helper returns 0 when the packet may be balanced, or the exit reason. */
#ifndef XLB_PARSE_H
#define XLB_PARSE_H

#include "structs.h"

#define PKT_SYN 0x1		/* TCP SYN without ACK: a new connection */
#define PKT_PTB 0x2		/* ICMP "too big" about the flow in key */
#define PKT_IP_OPTIONS 0x4	/* IPv4 header with options */
#define PKT_DF 0x8		/* IPv4 "don't fragment" */

struct packet {
	struct flow_key key;	/* the flow (for ICMP: the embedded one, swapped) */
	__u32 l3_len;		/* IP total length from the header */
	__u32 l4_room;		/* of it, the bytes after the IP header */
	__be16 tpid;		/* VLAN TPID, or 0 without a tag */
	__be16 tci;		/* VLAN tag control */
	__be16 h_proto;		/* ethertype of the IP header */
	__u8 tos;		/* IPv4 TOS or IPv6 traffic class */
	__u8 flags;		/* PKT_* */
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The flow cache reads the key as five 64-bit words (flowcache.h). A
 * 64-bit load of bytes written by narrower stores cannot be forwarded from
 * them and waits for them to reach the cache, so the parser writes each
 * word of the key with one store. set_addrs4 writes the IPv4 addresses
 * (the rest of their 16 bytes stays zero); set_ports the last word: ports,
 * protocol, family and padding. */
static __always_inline void set_addrs4(struct packet *p, __be32 src,
				       __be32 dst)
{
	__u64 *w = (__u64 *)&p->key;

	w[0] = src;
	w[2] = dst;
}

static __always_inline void set_ports(struct packet *p, __be16 sport,
				      __be16 dport)
{
	__u64 *w = (__u64 *)&p->key;

	w[4] = sport | (__u64)dport << 16 | (__u64)p->key.proto << 32 |
	       (__u64)p->key.family << 40;
}

/* parse_eth reads the Ethernet header and at most one VLAN tag and moves
 * *pos to the IP header. */
static __always_inline int parse_eth(struct packet *p, void **pos, void *end)
{
	struct ethhdr *eth = *pos;
	struct vlan_hdr *vlan;

	if ((void *)(eth + 1) > end)
		return EXIT_MALFORMED;
	p->h_proto = eth->h_proto;
	*pos = eth + 1;
	if (p->h_proto == ETH_P_8021Q_BE || p->h_proto == ETH_P_8021AD_BE) {
		vlan = *pos;
		if ((void *)(vlan + 1) > end)
			return EXIT_MALFORMED;
		p->tpid = p->h_proto;
		p->tci = vlan->tci;
		p->h_proto = vlan->encap_proto;
		*pos = vlan + 1;
	}
	if (p->h_proto != ETH_P_IP_BE && p->h_proto != ETH_P_IPV6_BE)
		return EXIT_NOT_IP;
	return 0;
}

/* parse_ipv4 reads an IPv4 header (options are skipped and flagged) and
 * moves *pos to the transport header. */
static __always_inline int parse_ipv4(struct packet *p, void **pos, void *end)
{
	struct iphdr *ip = *pos;
	__u32 hlen;

	if ((void *)(ip + 1) > end)
		return EXIT_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return EXIT_MALFORMED;
	hlen = ip->ihl * 4;
	p->l3_len = bpf_ntohs(ip->tot_len);
	if (p->l3_len < hlen || (void *)ip + p->l3_len > end)
		return EXIT_MALFORMED;
	if (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET))
		return EXIT_FRAGMENT;
	if (ip->frag_off & bpf_htons(IPV4_DF))
		p->flags |= PKT_DF;
	if (hlen > sizeof(*ip))
		p->flags |= PKT_IP_OPTIONS;
	p->key.family = FAMILY_V4;
	p->key.proto = ip->protocol;
	p->tos = ip->tos;
	set_addrs4(p, ip->saddr, ip->daddr);
	p->l4_room = p->l3_len - hlen;
	*pos = (void *)ip + hlen;
	return 0;
}

/* parse_ipv6 reads the fixed IPv6 header and moves *pos past it. Extension
 * headers are not walked. */
static __always_inline int parse_ipv6(struct packet *p, void **pos, void *end)
{
	struct ipv6hdr *ip6 = *pos;

	if ((void *)(ip6 + 1) > end)
		return EXIT_MALFORMED;
	if (ip6->version != 6)
		return EXIT_MALFORMED;
	p->l4_room = bpf_ntohs(ip6->payload_len);
	p->l3_len = p->l4_room + sizeof(*ip6);
	if ((void *)ip6 + p->l3_len > end)
		return EXIT_MALFORMED;
	switch (ip6->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_ICMPV6:
		break;
	case IPPROTO_FRAGMENT:
		return EXIT_FRAGMENT;
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
		return EXIT_IPV6_EXT;
	default:
		return EXIT_OTHER_PROTO;
	}
	p->key.family = FAMILY_V6;
	p->key.proto = ip6->nexthdr;
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	__builtin_memcpy(p->key.src, &ip6->saddr, 16);
	__builtin_memcpy(p->key.dst, &ip6->daddr, 16);
	*pos = ip6 + 1;
	return 0;
}

/* parse_ports reads the ports of a TCP or UDP header; for TCP it also
 * flags a SYN that opens a connection. */
static __always_inline int parse_ports(struct packet *p, void *pos, void *end)
{
	struct tcphdr *tcp = pos;
	struct udphdr *udp = pos;

	if (p->key.proto == IPPROTO_TCP) {
		if ((void *)(tcp + 1) > end || tcp->doff < 5)
			return EXIT_MALFORMED;
		set_ports(p, tcp->source, tcp->dest);
		if (tcp->syn && !tcp->ack)
			p->flags |= PKT_SYN;
		return 0;
	}
	if ((void *)(udp + 1) > end)
		return EXIT_MALFORMED;
	set_ports(p, udp->source, udp->dest);
	return 0;
}

/* parse_embedded reads the first 8 bytes of the transport header quoted in
 * an ICMP error and turns the quoted packet (VIP -> client, sent by a
 * backend) into the key of the client's flow: addresses and ports swapped. */
static __always_inline int parse_embedded_ports(struct packet *p, void *pos,
						void *end)
{
	__be16 *ports = pos;

	if ((void *)(ports + 2) > end)
		return EXIT_MALFORMED;
	if (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP)
		return EXIT_OTHER_PROTO;
	set_ports(p, ports[1], ports[0]);
	p->flags |= PKT_PTB;
	return 0;
}

/* parse_icmp4 accepts "fragmentation needed" and reads the quoted IPv4
 * header. */
static __always_inline int parse_icmp4(struct packet *p, void *pos, void *end)
{
	struct icmp_hdr *icmp = pos;
	struct iphdr *in;

	if ((void *)(icmp + 1) > end)
		return EXIT_MALFORMED;
	if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_FRAG_NEEDED)
		return EXIT_OTHER_PROTO;
	in = (void *)(icmp + 1);
	if ((void *)(in + 1) > end)
		return EXIT_MALFORMED;
	if (in->version != 4 || in->ihl != 5)
		return EXIT_MALFORMED;
	p->key.proto = in->protocol;
	set_addrs4(p, in->daddr, in->saddr);
	return parse_embedded_ports(p, in + 1, end);
}

/* parse_icmp6 accepts "packet too big" and reads the quoted IPv6 header. */
static __always_inline int parse_icmp6(struct packet *p, void *pos, void *end)
{
	struct icmp_hdr *icmp = pos;
	struct ipv6hdr *in;

	if ((void *)(icmp + 1) > end)
		return EXIT_MALFORMED;
	if (icmp->type != ICMPV6_PKT_TOOBIG || icmp->code != 0)
		return EXIT_OTHER_PROTO;
	in = (void *)(icmp + 1);
	if ((void *)(in + 1) > end)
		return EXIT_MALFORMED;
	if (in->version != 6)
		return EXIT_MALFORMED;
	p->key.proto = in->nexthdr;
	__builtin_memcpy(p->key.src, &in->daddr, 16);
	__builtin_memcpy(p->key.dst, &in->saddr, 16);
	return parse_embedded_ports(p, in + 1, end);
}

/* parse_packet fills p from the frame at [data, end). */
static __always_inline int parse_packet(struct packet *p, void *data, void *end)
{
	void *pos = data;
	int ret;

	ret = parse_eth(p, &pos, end);
	if (ret)
		return ret;
	if (p->h_proto == ETH_P_IP_BE)
		ret = parse_ipv4(p, &pos, end);
	else
		ret = parse_ipv6(p, &pos, end);
	if (ret)
		return ret;
	switch (p->key.proto) {
	case IPPROTO_TCP:
		if (p->l4_room < sizeof(struct tcphdr))
			return EXIT_MALFORMED;
		return parse_ports(p, pos, end);
	case IPPROTO_UDP:
		if (p->l4_room < sizeof(struct udphdr))
			return EXIT_MALFORMED;
		return parse_ports(p, pos, end);
	case IPPROTO_ICMP:
		if (p->key.family != FAMILY_V4)
			return EXIT_OTHER_PROTO;
		if (p->l4_room < sizeof(struct icmp_hdr))
			return EXIT_MALFORMED;
		return parse_icmp4(p, pos, end);
	case IPPROTO_ICMPV6:
		if (p->key.family != FAMILY_V6)
			return EXIT_OTHER_PROTO;
		if (p->l4_room < sizeof(struct icmp_hdr))
			return EXIT_MALFORMED;
		return parse_icmp6(p, pos, end);
	}
	return EXIT_OTHER_PROTO;
}

#endif

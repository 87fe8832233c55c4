// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_rig_gen: the packet-rate rig's traffic generator, run with
 * BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES on one end of a veth pair.
 * Live frames travel between veths by reference, so a page comes back
 * holding whatever the program under test wrote into it: every run writes
 * the whole header again from rig_template (a map, not a const global, which
 * clang would fold into zeros), then gives the frame its flow, and sends it
 * to the peer (XDP_TX). A frame of an established flow gets one of `flows`
 * source ports; with new_every n, every n-th frame is a flow never sent
 * before: source port and the low half of the source address from a
 * counter, and the SYN flag when it is TCP. The IPv4 header checksum is not
 * updated: the programs under test do not check it. Loader/rig.go writes
 * the same frames for its packet-socket fallback. */
#include "common.h"

#define RIG_HDR_LEN 64
/* Offsets in an Ethernet + IPv4 (no options) frame: TCP or UDP source
 * port, low half of the source address, IP protocol, TCP flags. */
#define RIG_SPORT_OFF (14 + 20)
#define RIG_SADDR_LO_OFF (14 + 12 + 2)
#define RIG_PROTO_OFF (14 + 9)
#define RIG_TCP_FLAGS_OFF (14 + 20 + 13)
#define RIG_NEW_PORTS 60000
#define TCP_SYN 0x02

struct rig_template {
	__u8 bytes[RIG_HDR_LEN]; /* the frame's first bytes */
	__u32 flows;             /* source ports used in turn: 1024 .. 1024+flows-1 */
	__u32 new_every;         /* every new_every-th frame a new flow; 0: none */
};

/* rig_template: 0 → the frame to send; written by the rig before a run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rig_template);
} rig_template SEC(".maps");

/* rig_seq: 0 → frames generated on this CPU; picks the next flow. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} rig_seq SEC(".maps");

SEC("xdp")
int xdp_rig_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct rig_template *t;
	__u32 zero = 0, flows, n, u, *seq;
	__u8 *b;

	t = bpf_map_lookup_elem(&rig_template, &zero);
	seq = bpf_map_lookup_elem(&rig_seq, &zero);
	if (!t || !seq || data + RIG_HDR_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, RIG_HDR_LEN);
	b = data;
	n = (*seq)++;
	if (t->new_every && n % t->new_every == t->new_every - 1) {
		u = n / t->new_every;
		*(__u16 *)(b + RIG_SPORT_OFF) = bpf_htons((__u16)(1024 + u % RIG_NEW_PORTS));
		*(__u16 *)(b + RIG_SADDR_LO_OFF) = bpf_htons((__u16)(1 + u / RIG_NEW_PORTS));
		if (b[RIG_PROTO_OFF] == IPPROTO_TCP)
			b[RIG_TCP_FLAGS_OFF] = TCP_SYN;
		return XDP_TX;
	}
	flows = t->flows ? t->flows : 1;
	*(__u16 *)(b + RIG_SPORT_OFF) = bpf_htons((__u16)(1024 + n % flows));
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

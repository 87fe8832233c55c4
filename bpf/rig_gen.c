// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_rig_gen: the packet-rate rig's traffic generator, run with
 * BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES on one end of a veth pair.
 * Live frames travel between veths by reference, so a page comes back
 * holding whatever the program under test wrote into it: every run writes
 * the whole header again from rig_template (a map, not a const global, which
 * clang would fold into zeros), then gives the frame its own flow by its TCP
 * source port, and sends it to the peer (XDP_TX). */
#include "common.h"

#define RIG_HDR_LEN 64
/* Offset of the TCP source port in an Ethernet + IPv4 (no options) frame. */
#define RIG_SPORT_OFF (14 + 20)

struct rig_template {
	__u8 bytes[RIG_HDR_LEN]; /* the frame's first bytes */
	__u32 flows;             /* source ports used in turn: 1024 .. 1024+flows-1 */
	__u32 pad;
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
	__u32 zero = 0, flows, *seq;
	__u16 *sport;

	t = bpf_map_lookup_elem(&rig_template, &zero);
	seq = bpf_map_lookup_elem(&rig_seq, &zero);
	if (!t || !seq || data + RIG_HDR_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, RIG_HDR_LEN);
	flows = t->flows ? t->flows : 1;
	sport = data + RIG_SPORT_OFF;
	*sport = bpf_htons((__u16)(1024 + *seq % flows));
	(*seq)++;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

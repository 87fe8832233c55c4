// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_rig_count: counts every frame and returns a fixed verdict. The
 * packet-rate rig attaches it where forwarded frames come back (verdict
 * XDP_DROP); the lab attaches it with XDP_PASS to the bridge-side peer of the
 * balancer's veth, because veth delivers XDP_TX frames to a peer without an
 * XDP program only when something else wakes that peer up. */
#include "common.h"

/* verdict is set by the loader before loading (rodata). */
volatile const __u32 verdict = XDP_DROP;

struct rig_counters {
	__u64 packets;
	__u64 bytes;
};

/* rig_counts: 0 → packets and bytes seen, per CPU; written here, read by
 * the rig. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rig_counters);
} rig_counts SEC(".maps");

SEC("xdp")
int xdp_rig_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct rig_counters *c = bpf_map_lookup_elem(&rig_counts, &zero);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

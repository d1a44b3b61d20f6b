// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * drop: XDP_DROP for every frame, the smallest possible XDP program.
 * Region: verdict.
 *
 * The _sub variant (-DINXPECT_SUBPROG) also counts drops per VLAN depth
 * (0, 1, 2 tags, 3 = frame too short for Ethernet/VLAN) in a per-CPU array,
 * from a subprogram holding the `account` region and a bounded VLAN loop.
 */
#include "common.h"

#ifdef INXPECT_SUBPROG
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VLAN + 2);
	__type(key, __u32);
	__type(value, __u64);
} drop_stats SEC(".maps");

APP_FN void account(void *data, void *data_end)
{
	__u32 l3_off = 0, depth;
	__u64 *cnt;

	INXPECT_START(account);
	if (parse_eth(data, data_end, &l3_off) < 0)
		depth = MAX_VLAN + 1;
	else
		depth = (l3_off - sizeof(struct ethhdr)) / sizeof(struct vlan_hdr_);
	cnt = bpf_map_lookup_elem(&drop_stats, &depth);
	if (!cnt) {
		INXPECT_END(account);
		return;
	}
	*cnt += 1;
	INXPECT_END(account);
}
#endif

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	int action;

#ifdef INXPECT_SUBPROG
	account((void *)(long)ctx->data, (void *)(long)ctx->data_end);
#endif
	INXPECT_START(verdict);
	action = XDP_DROP;
	INXPECT_END(verdict);
	return action;
}

char _license[] SEC("license") = "Dual BSD/GPL";

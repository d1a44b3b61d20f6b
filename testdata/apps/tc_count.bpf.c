// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc_count: a tc (sched_cls) classifier for ingress or egress.
 * Regions: parse, account.
 *
 * Counts IPv4 frames per destination address in `flows` (HASH, written by
 * the datapath) and drops those whose destination is in `blocked` (HASH,
 * written by the control plane). Verdicts: blocked -> TC_ACT_SHOT; anything
 * else (counted or not IPv4) -> TC_ACT_OK. The swap tests read `flows`
 * after a profile: every frame is counted once, by the original or by the
 * instrumented build, since both use the same map.
 */
#include "common.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} blocked SEC(".maps");

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__u64 zero = 0, *n;
	__u32 dst;

	INXPECT_START(parse);
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) {
		INXPECT_END(parse);
		return TC_ACT_OK;
	}
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->version != 4) {
		INXPECT_END(parse);
		return TC_ACT_OK;
	}
	dst = iph->daddr;
	INXPECT_END(parse);

	INXPECT_START(account);
	if (bpf_map_lookup_elem(&blocked, &dst)) {
		INXPECT_END(account);
		return TC_ACT_SHOT;
	}
	n = bpf_map_lookup_elem(&flows, &dst);
	if (!n) {
		/* Another CPU may create it first: NOEXIST fails, the lookup finds it. */
		bpf_map_update_elem(&flows, &dst, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&flows, &dst);
	}
	if (n)
		__sync_fetch_and_add(n, 1);
	INXPECT_END(account);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";

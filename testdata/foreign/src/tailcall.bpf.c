/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Tail calls: a PROG_ARRAY filled at load time by libbpf's declarative
 * initialisation, and an entry that jumps through it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int leaf(struct xdp_md *ctx)
{
	return XDP_DROP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int(void *));
} jmp SEC(".maps") = {
	.values = { [1] = (void *)&leaf },
};

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

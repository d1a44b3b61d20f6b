/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A bounded loop the verifier walks once per pass (its counter is exact in
 * every state, so no pass prunes another): about 700K instructions
 * processed, more than half the verifier's budget of 1M. One walk fits;
 * the walk of an uninstrumented copy as well does not, which is what a
 * sampling session's default copy must survive (loader_testrun.rs). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

#ifndef PASSES
#define PASSES 60000
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} total SEC(".maps");

SEC("xdp")
int bigloop(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 acc = ctx->data_end - ctx->data, *v;

	INXPECT_START(loop);
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PASSES; i++) {
		acc = acc * 31 + i;
		acc ^= acc >> 13;
	}
	INXPECT_END(loop);
	v = bpf_map_lookup_elem(&total, &key);
	if (v)
		*v += acc & 0xff;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region inside a bounded loop of 2000 passes. The verifier walks the
 * loop pass by pass (the counter is exact in every state) and keeps, for
 * each pass, the other side of every branch it has not walked yet: at most
 * 8192 of them ("The sequence of 8193 jumps is too complex"). The sites
 * leave two per pass (START's and END's tests of the run mask); END's
 * inline statistics three more (the fast delta, min, max), which takes
 * the program over the limit, where END as a call of the runtime stays
 * under it (loader_testrun.rs: the loader retries with --stats call). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

#ifndef PASSES
#define PASSES 2000
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} total SEC(".maps");

SEC("xdp")
int sitesloop(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 acc = ctx->data_end - ctx->data, *v;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PASSES; i++) {
		INXPECT_START(pass);
		acc = acc * 31 + i;
		INXPECT_END(pass);
	}
	v = bpf_map_lookup_elem(&total, &key);
	if (v)
		*v += acc & 0xff;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A region whose nesting the counters cannot tell: helper's `inner` runs
 * once inside `outer` and once outside it, so how much of inner's count
 * ran inside outer is unknown (and outer's self with it). The loader's
 * tree must say so, and --folded refuse, instead of guessing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

static __attribute__((noinline)) int helper(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(inner);
	r = ctx->ingress_ifindex * 3;
	INXPECT_END(inner);
	return r;
}

SEC("xdp")
int xdp_ambiguous(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(outer);
	r = helper(ctx);
	INXPECT_END(outer);
	r += helper(ctx);
	return r == 12345 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

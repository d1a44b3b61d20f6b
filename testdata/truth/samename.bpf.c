/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The same region name, `work`, in a program and in a subprogram it calls
 * (not nested): two regions, told apart by function. */
#include "truth.h"

struct truth {
	__u64 runs, f_samename, f_helper, r_work__samename, r_work__helper;
} truth SEC(".data.truth");

static __noinline int helper(struct xdp_md *ctx, __u32 off)
{
	__u8 *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	int v;

	TRUTH_BUMP(f_helper);
	INXPECT_START(work);
	if (off > 64 || d + off + 1 > e) {
		TRUTH_END(work, helper);
		return -1;
	}
	v = d[off];
	TRUTH_END(work, helper);
	return v;
}

SEC("xdp")
int samename(struct xdp_md *ctx)
{
	int a, b = 0;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_samename);
	INXPECT_START(work);
	a = frame_byte(ctx, 14);
	if (a < 0) {
		TRUTH_END(work, samename);
		return XDP_PASS;
	}
	TRUTH_END(work, samename);
	if (a & 1)
		b = helper(ctx, 15);
	if (a & 2)
		b += helper(ctx, 16);
	return b & 1 ? XDP_DROP : XDP_TX;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region inside a global (non-static, verified on its own) subprogram. */
#include "truth.h"

struct truth {
	__u64 runs, f_global_sub, f_gscan, r_gscan__gscan;
} truth SEC(".data.truth");

__noinline int gscan(struct xdp_md *ctx, __u32 off)
{
	__u8 *d, *e;
	int v;

	TRUTH_BUMP(f_gscan);
	INXPECT_START(gscan);
	d = (void *)(long)ctx->data;
	e = (void *)(long)ctx->data_end;
	off &= 63;
	if (d + off + 1 > e) {
		TRUTH_END(gscan, gscan);
		return -1;
	}
	v = d[off];
	TRUTH_END(gscan, gscan);
	return v;
}

SEC("xdp")
int global_sub(struct xdp_md *ctx)
{
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_global_sub);
	a = gscan(ctx, 14);
	if (a > 100)
		a = gscan(ctx, 15);
	return a < 0 ? XDP_PASS : a & 1 ? XDP_DROP : XDP_TX;
}

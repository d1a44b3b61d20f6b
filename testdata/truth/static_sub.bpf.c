/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region inside a static subprogram called from two sites, with an early
 * exit. */
#include "truth.h"

struct truth {
	__u64 runs, f_static_sub, f_scan, r_scan__scan;
} truth SEC(".data.truth");

static __noinline int scan(struct xdp_md *ctx, __u32 off)
{
	__u8 *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	int v;

	TRUTH_BUMP(f_scan);
	INXPECT_START(scan);
	if (off > 64 || d + off + 1 > e) {
		TRUTH_END(scan, scan);
		return -1;
	}
	v = d[off];
	TRUTH_END(scan, scan);
	return v;
}

SEC("xdp")
int static_sub(struct xdp_md *ctx)
{
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_static_sub);
	a = scan(ctx, 14);
	if (a > 100)
		a = scan(ctx, 15);
	return a < 0 ? XDP_PASS : a & 1 ? XDP_DROP : XDP_TX;
}

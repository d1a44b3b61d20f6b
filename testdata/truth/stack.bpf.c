/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Close to the stack limit: the program's frame is 464 bytes and it calls a
 * subprogram with a 40-byte frame, 504 of the 512 bytes combined (512 with
 * the JIT's 16-byte rounding). The rewrite must load, or fail with one
 * clear error line; never give an object the kernel refuses.
 */
#include "truth.h"

struct truth {
	__u64 runs, f_stack, f_deep, r_fill__stack, r_deep__deep;
} truth SEC(".data.truth");

static __noinline int deep(struct xdp_md *ctx, __u32 k)
{
	volatile __u64 buf[5];
	__u32 i;

	TRUTH_BUMP(f_deep);
	INXPECT_START(deep);
#pragma clang loop unroll(disable)
	for (i = 0; i < 5; i++)
		buf[i] = k + i;
	k = buf[k & 3];
	TRUTH_END(deep, deep);
	return k;
}

SEC("xdp")
int stack(struct xdp_md *ctx)
{
	volatile __u64 big[58];
	__u32 i;
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_stack);
	a = frame_byte(ctx, 14);
	if (a < 0)
		return XDP_PASS;
	INXPECT_START(fill);
#pragma clang loop unroll(disable)
	for (i = 0; i < 58; i++)
		big[i] = a * i;
	TRUTH_END(fill, stack);
	return deep(ctx, big[a & 31]) & 1 ? XDP_DROP : XDP_PASS;
}

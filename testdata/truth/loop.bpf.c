/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region in a bounded loop (kept a loop: unrolling disabled), with an
 * exit from the loop inside the region. */
#include "truth.h"

struct truth {
	__u64 runs, f_loop, r_iter__loop;
} truth SEC(".data.truth");

SEC("xdp")
int loop(struct xdp_md *ctx)
{
	__u8 *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	__u32 i, n, acc = 0;
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_loop);
	a = frame_byte(ctx, 14);
	if (a < 0)
		return XDP_PASS;
	n = a & 15;
#pragma clang loop unroll(disable)
	for (i = 0; i < 16; i++) {
		if (i >= n)
			break;
		INXPECT_START(iter);
		if (d + 16 + i > e) {
			TRUTH_END(iter, loop);
			break;
		}
		acc += d[15 + i];
		TRUTH_END(iter, loop);
	}
	return acc & 1 ? XDP_DROP : XDP_PASS;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Nesting: inner inside mid inside outer, with exits that close several
 * regions at once (innermost END first). */
#include "truth.h"

struct truth {
	__u64 runs, f_nest, r_outer__nest, r_mid__nest, r_inner__nest;
} truth SEC(".data.truth");

SEC("xdp")
int nest(struct xdp_md *ctx)
{
	int a, b;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_nest);
	INXPECT_START(outer);
	a = frame_byte(ctx, 14);
	if (a < 0) {
		TRUTH_END(outer, nest);
		return XDP_PASS;
	}
	if (a & 1) {
		INXPECT_START(mid);
		b = frame_byte(ctx, 15);
		if (b < 0) {
			TRUTH_END(mid, nest);
			TRUTH_END(outer, nest);
			return XDP_ABORTED;
		}
		if (b & 1) {
			INXPECT_START(inner);
			if (b & 2) {
				TRUTH_END(inner, nest);
				TRUTH_END(mid, nest);
				TRUTH_END(outer, nest);
				return XDP_DROP;
			}
			TRUTH_END(inner, nest);
		}
		TRUTH_END(mid, nest);
	}
	if (a & 2) {
		TRUTH_END(outer, nest);
		return XDP_TX;
	}
	TRUTH_END(outer, nest);
	return XDP_PASS;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Early exits inside a region, each with its own END. */
#include "truth.h"

struct truth {
	__u64 runs, f_early, r_parse__early, r_check__early;
} truth SEC(".data.truth");

SEC("xdp")
int early(struct xdp_md *ctx)
{
	int a, b;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_early);
	INXPECT_START(parse);
	a = frame_byte(ctx, 14);
	if (a < 0) {
		TRUTH_END(parse, early);
		return XDP_PASS;
	}
	if (a < 40) {
		TRUTH_END(parse, early);
		return XDP_DROP;
	}
	if (a < 80) {
		TRUTH_END(parse, early);
		return XDP_TX;
	}
	TRUTH_END(parse, early);
	INXPECT_START(check);
	b = frame_byte(ctx, 15);
	if (b < 0) {
		TRUTH_END(check, early);
		return XDP_ABORTED;
	}
	if (b & 1) {
		TRUTH_END(check, early);
		return XDP_DROP;
	}
	TRUTH_END(check, early);
	return XDP_PASS;
}

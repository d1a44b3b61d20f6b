/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ENDs that may run without a START of the same run: such a region keeps
 * its run marks (an END must not close a START of an earlier run), where
 * a region every END of which closes a START goes without.
 */
#include "truth.h"

struct truth {
	__u64 runs, f_unstarted, r_cond__unstarted, r_again__unstarted, r_plain__unstarted;
} truth SEC(".data.truth");

SEC("xdp")
int unstarted(struct xdp_md *ctx)
{
	volatile int started = 0;
	int a, i;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_unstarted);
	a = frame_byte(ctx, 14);
	/* START on some frames only, END on every one. */
	if (a > 0 && (a & 4)) {
		INXPECT_START(cond);
		started = 1;
	}
	if (started)
		TRUTH_BUMP(r_cond__unstarted);
	INXPECT_END(cond);
	/* START before a loop, END in it: only its first END closes it. */
	INXPECT_START(again);
#pragma nounroll
	for (i = 0; i < 3; i++) {
		if (i == 0)
			TRUTH_BUMP(r_again__unstarted);
		INXPECT_END(again);
		if (frame_byte(ctx, 15 + i) < 0)
			break;
	}
	/* Every END after its START: no marks. */
	INXPECT_START(plain);
	a = frame_byte(ctx, 20);
	if (a < 0) {
		TRUTH_END(plain, unstarted);
		return XDP_PASS;
	}
	TRUTH_END(plain, unstarted);
	return XDP_DROP;
}

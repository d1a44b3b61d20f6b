/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region around a bpf-to-bpf call (twice on some paths). */
#include "truth.h"

struct truth {
	__u64 runs, f_call, f_mix, r_around__call, r_again__call;
} truth SEC(".data.truth");

static __noinline int mix(__u32 x)
{
	TRUTH_BUMP(f_mix);
	return (x * 2654435761u) >> 28;
}

SEC("xdp")
int call(struct xdp_md *ctx)
{
	int a, r;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_call);
	a = frame_byte(ctx, 14);
	if (a < 0)
		return XDP_PASS;
	INXPECT_START(around);
	r = mix(a);
	TRUTH_END(around, call);
	if (r & 1) {
		INXPECT_START(again);
		r = mix(r + a);
		TRUTH_END(again, call);
	}
	return r & 2 ? XDP_DROP : XDP_PASS;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A region in a bpf_loop callback (a subprogram the kernel calls), and a
 * region around the bpf_loop call. */
#include "truth.h"

struct truth {
	__u64 runs, f_bpfloop, f_step, r_step__step, r_loop__bpfloop;
} truth SEC(".data.truth");

struct acc {
	__u32 sum, stop;
};

static int step(__u32 i, void *arg)
{
	struct acc *c = arg;

	TRUTH_BUMP(f_step);
	INXPECT_START(step);
	c->sum += i * 7 + 1;
	if (i == c->stop) {
		TRUTH_END(step, step);
		return 1;
	}
	TRUTH_END(step, step);
	return 0;
}

SEC("xdp")
int bpfloop(struct xdp_md *ctx)
{
	struct acc c = {};
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_bpfloop);
	a = frame_byte(ctx, 14);
	if (a < 0)
		return XDP_PASS;
	c.stop = (a >> 4) & 7;
	INXPECT_START(loop);
	bpf_loop(a & 7, step, &c, 0);
	TRUTH_END(loop, bpfloop);
	return c.sum & 1 ? XDP_DROP : XDP_PASS;
}

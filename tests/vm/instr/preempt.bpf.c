// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * One long region for the preemption check (tests/tests/vm.rs, arm64 7.x
 * guest: a preemptible kernel): `long` spins SPIN passes of a bpf_loop
 * (several ms under -icount), so a real-time task of the guest driver
 * (`run --preempt`) wakes inside it, preempts the test run, moves the
 * counters and has the module heal its cache before the region's END. The
 * region's instructions are the same on every run, so every measurement it
 * records must be the quiet runs' count exactly. Built and instrumented on
 * the host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

#ifndef SPIN
#define SPIN (1 << 19)
#endif

static long pass(__u64 i, void *ctx)
{
	(void)i;
	(void)ctx;
	return 0;
}

SEC("xdp")
int xdp_preempt(struct xdp_md *ctx)
{
	(void)ctx;
	INXPECT_START(long);
	bpf_loop(SPIN, pass, NULL, 0);
	INXPECT_END(long);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

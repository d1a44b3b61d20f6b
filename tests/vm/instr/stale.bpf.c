// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * The ground truth for the `invalid` column (tests/tests/vm.rs,
 * `run --resched`): after its regions, every run reads the module's
 * counters itself and counts whether a read was invalid (bit 63). The
 * module's per-CPU cache only changes in process context on its CPU, never
 * during a run of a non-preemptible XDP program, so a run's own reads are
 * invalid exactly when its regions' reads were: `stale_runs` is how many
 * measurements of each region must be counted in `invalid`. -DNSLOTS=N
 * reads slots 0..N-1 (the events the probes read). Built and instrumented
 * on the host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

#ifndef NSLOTS
#define NSLOTS 1
#endif

extern __u64 inxpect_read_pmc(__u32 slot) __ksym __weak;

__u64 stale_runs, valid_runs;

SEC("xdp")
int xdp_stale(struct xdp_md *ctx)
{
	__u64 v = 0;

	INXPECT_START(s0);
	asm volatile("r0 = 0" ::: "r0");
	INXPECT_END(s0);
	INXPECT_START(s1);
	asm volatile("r0 = 0\nr0 += 1" ::: "r0");
	INXPECT_END(s1);
	for (__u32 i = 0; i < NSLOTS; i++)
		v |= inxpect_read_pmc(i);
	if (v >> 63)
		stale_runs++;
	else
		valid_runs++;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

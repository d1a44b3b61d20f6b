// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Regions of known length for the exact checks under a real PMU
 * (tests/tests/vm.rs, arm64 guests): region kN holds N BPF instructions,
 * `r0 = 0` then N-1 times `r0 += 1`. The arm64 JIT emits one instruction for
 * each (BPF_MOV64_IMM 0 -> movz, BPF_ALU64_ADD_IMM 1 -> add #1), so a region
 * kN measures exactly N more retired instructions than the empty region k0.
 * r0 is dead at both markers, so the probes around every region are the
 * same code. Built and instrumented on the host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

#define KINSNS(n) asm volatile("r0 = 0\n.rept " #n " - 1\nr0 += 1\n.endr" ::: "r0")

SEC("xdp")
int xdp_kinsns(struct xdp_md *ctx)
{
	INXPECT_START(k0);
	INXPECT_END(k0);
	INXPECT_START(k1);
	KINSNS(1);
	INXPECT_END(k1);
	INXPECT_START(k10);
	KINSNS(10);
	INXPECT_END(k10);
	INXPECT_START(k100);
	KINSNS(100);
	INXPECT_END(k100);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

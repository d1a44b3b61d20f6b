// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Regions of known length for the exact checks under a real PMU
 * (tests/tests/vm.rs, arm64 guests): region kN holds N BPF instructions,
 * `r0 = 0` then N-1 times `r0 += 1`. The arm64 JIT emits one instruction for
 * each (BPF_MOV64_IMM 0 -> movz, BPF_ALU64_ADD_IMM 1 -> add #1), so a region
 * kN measures exactly N more retired instructions than the empty region k0.
 * r0 is dead at both markers, so the probes around every region are the
 * same code. kbusy10 and ksub10 hold 10 with probes of other shapes, which
 * the calibration takes out by their shape. Built and instrumented on the
 * host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

#define KINSNS(n) asm volatile("r0 = 0\n.rept " #n " - 1\nr0 += 1\n.endr" ::: "r0")

/* The same k in a subprogram: END looks the per-CPU state up before it
 * reads (the calibration's `empty_sub`). */
static __noinline int ksub(void)
{
	int r;

	INXPECT_START(ksub10);
	KINSNS(10);
	INXPECT_END(ksub10);
	asm volatile("%0 = 0" : "=r"(r));
	return r;
}

SEC("xdp")
int xdp_kinsns(struct xdp_md *ctx)
{
	__u64 a, b, c, d;

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
	/* Four values live across the region in the callee-saved registers
	 * (R0-R5 clobbered before they are read): no register is dead at
	 * START, which fills the per-CPU pointer again after its read
	 * (`empty_busy`). */
	asm volatile("%0 = 1\n%1 = 2\n%2 = 3\n%3 = 4" : "=r"(a), "=r"(b), "=r"(c), "=r"(d));
	INXPECT_START(kbusy10);
	KINSNS(10);
	INXPECT_END(kbusy10);
	asm volatile("" ::: "r0", "r1", "r2", "r3", "r4", "r5");
	asm volatile("%0 += %1\n%0 += %2\n%0 += %3" : "+r"(a) : "r"(b), "r"(c), "r"(d));
	return XDP_PASS + ksub();
}

char _license[] SEC("license") = "Dual BSD/GPL";

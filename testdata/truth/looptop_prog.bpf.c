/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A program whose loop jumps back to its first instruction, which is also
 * the START of the region in the loop.
 *
 * Only r1 (ctx) is known at a program's entry, so the loop state is ctx
 * itself: a second pass runs with r1 = 0 (the verifier sees two distinct
 * states and bounds the loop). Written as a naked function because clang 14
 * always rotates such a loop in C (the first pass is peeled and the
 * back-edge lands after the header); the markers are spelled as inxpect.h
 * spells them. Runs and calls are counted at the exit, once per entry.
 */
#include "truth.h"

struct truth {
	__u64 runs, f_looptop_prog, r_top__looptop_prog;
} truth SEC(".data.truth");

#define OFF(f) __builtin_offsetof(struct truth, f)

SEC("xdp")
__attribute__((naked)) int looptop_prog(struct xdp_md *ctx)
{
	asm volatile(
		"__inxpect_start_top_%=: goto +0\n"
		"r2 = truth ll\n"
		"r3 = *(u64 *)(r2 + %[top])\n"
		"r3 += 1\n"
		"*(u64 *)(r2 + %[top]) = r3\n"
		"__inxpect_end_top_%=: goto +0\n"
		/* Second pass: XDP_DROP. */
		"r0 = 1\n"
		"if r1 == 0 goto out_%=\n"
		"r0 = 2\n"
		"r2 = *(u32 *)(r1 + 0)\n"
		"r3 = *(u32 *)(r1 + 4)\n"
		"r4 = r2\n"
		"r4 += 15\n"
		"if r4 > r3 goto out_%=\n"
		"r4 = *(u8 *)(r2 + 14)\n"
		"r4 &= 1\n"
		"if r4 == 0 goto out_%=\n"
		/* An odd byte 14: once more, from instruction 0. */
		"r1 = 0\n"
		"goto __inxpect_start_top_%=\n"
		"out_%=: r2 = truth ll\n"
		"r3 = *(u64 *)(r2 + %[runs])\n"
		"r3 += 1\n"
		"*(u64 *)(r2 + %[runs]) = r3\n"
		"r3 = *(u64 *)(r2 + %[calls])\n"
		"r3 += 1\n"
		"*(u64 *)(r2 + %[calls]) = r3\n"
		"exit\n"
		:
		: [top] "i"(OFF(r_top__looptop_prog)), [runs] "i"(OFF(runs)),
		  [calls] "i"(OFF(f_looptop_prog))
		: "memory");
}

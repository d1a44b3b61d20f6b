/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Subprograms whose loop jumps back to their first instruction.
 *
 * `spin` is C: `for (;;)` opens the body and all its state comes in
 * registers (the END counter by a pointer to the caller's stack, which
 * clang cannot fold into a constant to hoist above the loop), so clang
 * emits no prologue. Calls are counted at the call sites (the entry is the
 * loop head), the region's ENDs by `ends`.
 *
 * `spin_slow` is the same loop in asm (any work in the C loop makes clang
 * rotate it or hoist a constant) where every pass but the last first does
 * the slow work `slow` does once: in --functions a call of `spin_slow`
 * (2 passes or more) takes at least as long as one of `slow`, unless the
 * entry probe runs again at the back-edge and only the fast last pass is
 * measured.
 */
#include "truth.h"

struct truth {
	__u64 runs, f_looptop_sub, f_spin, f_spin_slow, f_slow, r_spin__spin,
		r_slowspin__spin_slow;
} truth SEC(".data.truth");

static __noinline int spin(__u64 *ends, __u64 n)
{
	for (;;) {
		INXPECT_START(spin);
		*ends += 1;
		INXPECT_END(spin);
		if (--n == 0)
			return 0;
	}
}

/* 64 read-modify-writes of *r3 (r4 scratch). */
#define SLOW_WORK                            \
	".rept 64\n"                         \
	"r4 = *(u64 *)(r3 + 0)\n"            \
	"r4 += 1\n"                          \
	"*(u64 *)(r3 + 0) = r4\n"            \
	".endr\n"

/* r1: END counter, r2: passes (>= 1), r3: scratch. */
static __noinline __attribute__((naked)) int spin_slow(__u64 *ends, __u64 n, __u64 *scratch)
{
	asm volatile(
		"if r2 == 1 goto last_%=\n"
		SLOW_WORK
		"last_%=:\n"
		"__inxpect_start_slowspin_%=: goto +0\n"
		"r4 = *(u64 *)(r1 + 0)\n"
		"r4 += 1\n"
		"*(u64 *)(r1 + 0) = r4\n"
		"__inxpect_end_slowspin_%=: goto +0\n"
		"r2 += -1\n"
		"if r2 != 0 goto spin_slow\n"
		"r0 = 0\n"
		"exit\n" ::: "memory");
}

/* r1: scratch. */
static __noinline __attribute__((naked)) int slow(__u64 *scratch)
{
	asm volatile(
		"r3 = r1\n"
		SLOW_WORK
		"r0 = 0\n"
		"exit\n" ::: "memory");
}

SEC("xdp")
int looptop_sub(struct xdp_md *ctx)
{
	__u64 ends = 0, slow_ends = 0, scratch = 0;
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_looptop_sub);
	a = frame_byte(ctx, 14);
	if (a < 0)
		return XDP_PASS;
	TRUTH_BUMP(f_spin);
	spin(&ends, (a & 7) + 1);
	if (a & 8) {
		TRUTH_BUMP(f_spin);
		spin(&ends, 2);
	}
	truth.r_spin__spin += ends;
	TRUTH_BUMP(f_slow);
	slow(&scratch);
	TRUTH_BUMP(f_spin_slow);
	spin_slow(&slow_ends, (a & 3) + 2, &scratch);
	truth.r_slowspin__spin_slow += slow_ends;
	return (a ^ scratch) & 1 ? XDP_DROP : XDP_PASS;
}

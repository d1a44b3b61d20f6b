// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * A subprogram whose loop jumps back to its first instruction, for the exact
 * `--functions` check under a real PMU (tests/tests/vm.rs, arm64 guests).
 * `spin` runs r1 passes of 10 `r3 = 1` (one arm64 instruction each after
 * the JIT) plus the decrement and the branch back to its entry. Its
 * function region must count every pass: with exact counts the fewest
 * instructions of a call grow by the same amount for each extra pass, while
 * a probe that ran again at the back-edge would measure the last pass only
 * (the same count for every n). One program per pass count, each run on its
 * own. Built and instrumented on the host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* r1: passes (>= 1). */
static __noinline __attribute__((naked)) int spin(__u64 n)
{
	asm volatile(".rept 10\n"
		     "r3 = 1\n"
		     ".endr\n"
		     "r1 += -1\n"
		     "if r1 != 0 goto spin\n"
		     "r0 = 0\n"
		     "exit\n" ::: "memory");
}

#define LOOPTOP(n)                                   \
	SEC("xdp") int looptop_##n(struct xdp_md *ctx) \
	{                                            \
		(void)ctx;                           \
		spin(n);                             \
		return XDP_PASS;                     \
	}

LOOPTOP(1)
LOOPTOP(2)
LOOPTOP(5)

char _license[] SEC("license") = "Dual BSD/GPL";

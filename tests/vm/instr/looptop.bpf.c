// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * A subprogram whose loop jumps back to its first instruction, for the exact
 * `--functions` check under a real PMU (tests/tests/vm.rs, arm64 guests).
 * `spin_N` runs r1 passes of 10 `r3 = 1` (one arm64 instruction each after
 * the JIT) plus the decrement and the branch back to its entry. Its
 * function region must count every pass: with exact counts the fewest
 * instructions of a call grow by the same amount for each extra pass, while
 * a probe that ran again at the back-edge would measure the last pass only
 * (the same count for every n). One program and subprogram per pass count.
 * Built and instrumented on the host by the test.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* spin_N: r1 passes (>= 1). One copy per program, so that the three run
 * from one load: the probes' code then has the same map addresses in all
 * three, and the same length after the JIT (arm64 writes an address in 2 to
 * 4 instructions, depending on its bits), and the counts of two loads are
 * not compared. */
#define LOOPTOP(n)                                                   \
	static __noinline __attribute__((naked)) int spin_##n(__u64 p) \
	{                                                            \
		asm volatile(".rept 10\n"                            \
			     "r3 = 1\n"                              \
			     ".endr\n"                               \
			     "r1 += -1\n"                            \
			     "if r1 != 0 goto spin_" #n "\n"         \
			     "r0 = 0\n"                              \
			     "exit\n" ::: "memory");                 \
	}                                                            \
	SEC("xdp") int looptop_##n(struct xdp_md *ctx)                 \
	{                                                            \
		(void)ctx;                                           \
		spin_##n(n);                                         \
		return XDP_PASS;                                     \
	}

LOOPTOP(1)
LOOPTOP(2)
LOOPTOP(5)

char _license[] SEC("license") = "Dual BSD/GPL";

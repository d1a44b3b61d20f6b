// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * A whole program of known length for `inxpect-bench vm-arm64`: built with
 * -DK=N, xdp_kprog runs N BPF instructions (`r0 = 0`, then N-1 times
 * `r0 += 1`, one arm64 instruction each after the JIT) before it returns
 * XDP_PASS. perf's fentry/fexit and inxpect's one region around the program
 * must both measure exactly N more instructions than with K=0.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef K
#define K 0
#endif
#define STR(x) #x
#define XSTR(x) STR(x)

SEC("xdp")
int xdp_kprog(struct xdp_md *ctx)
{
	(void)ctx;
#if K > 0
	asm volatile("r0 = 0\n.rept " XSTR(K) " - 1\nr0 += 1\n.endr" ::: "r0");
#endif
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

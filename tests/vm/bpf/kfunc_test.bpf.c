// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Calls the inxpect kfuncs from XDP and TC; the guest program checks .bss. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "kfunc_test.h"

/* Exactly as the runtime declares them: __weak, so this object also loads
 * without the module and bpf_ksym_exists() is then false. */
extern __u64 inxpect_read_pmc(__u32 slot) __ksym __weak;
extern __u64 inxpect_read_tsc(void) __ksym __weak;
extern __u64 inxpect_read_pmc0_lo(void) __ksym __weak;
extern __u64 inxpect_read_pmc0_lo_end(void) __ksym __weak;
extern __u64 inxpect_read_tsc_lo(void) __ksym __weak;

struct kfunc_result result;

/*
 * Two ways to skip the calls when the module is absent; built twice:
 * - bpf_ksym_exists() (default): an ld_imm64 of the kfunc, which kernels
 *   before 6.4 refuse once the kfunc resolves ("pseudo btf_id ... in ldimm64
 *   isn't KIND_VAR"), so it only works without the module there.
 * - KT_RODATA_GUARD: a read-only flag the loader sets before loading; the
 *   verifier removes the dead calls. Works on every kernel.
 */
#ifdef KT_RODATA_GUARD
const volatile __u32 kt_have_kfuncs;
#define HAVE_KFUNCS() (kt_have_kfuncs)
#else
#define HAVE_KFUNCS()                                                              \
	(bpf_ksym_exists(inxpect_read_tsc) && bpf_ksym_exists(inxpect_read_pmc) && \
	 bpf_ksym_exists(inxpect_read_tsc_lo) && bpf_ksym_exists(inxpect_read_pmc0_lo) && \
	 bpf_ksym_exists(inxpect_read_pmc0_lo_end))
#endif

static __always_inline void probe(void)
{
	__u64 a, b;
	__u32 i;

	result.runs++;
	if (!HAVE_KFUNCS())
		return;
	result.present++;
	a = inxpect_read_tsc();
	b = inxpect_read_tsc();
	result.tsc_first = a;
	result.tsc_second = b;
	if (!result.tsc_start)
		result.tsc_start = a;
	if (b <= a)
		result.tsc_not_increasing++;
	if (b < a)
		result.tsc_back++;
	a = inxpect_read_tsc_lo();
	b = inxpect_read_tsc_lo();
	result.tsc_lo_delta = (__u32)(b - a);
	if ((a >> 32) || (b >> 32))
		result.tsc_lo_bad++;
	if ((__u32)(b - a) == 0)
		result.tsc_lo_same++;
	/* A region as the probes make it: START, END. */
	a = inxpect_read_pmc0_lo();
	b = inxpect_read_pmc0_lo_end();
	result.pmc0_lo = a;
	result.pmc0_lo_end = b;
	if (!(a >> 63) && !(b >> 63))
		result.pmc0_lo_valid++;
	if ((a >> 32 && a != KT_INVALID) || (b >> 32 && b != KT_INVALID))
		result.pmc0_lo_bad++;
#pragma unroll
	for (i = 0; i < KT_SLOTS; i++) {
		__u64 v = inxpect_read_pmc(i);

		result.pmc[i] = v;
		if (!(v >> 63))
			result.pmc_valid[i]++;
	}
}

SEC("xdp")
int kfunc_xdp(struct xdp_md *ctx)
{
	probe();
	return XDP_TX; /* distinctive: the guest checks the verdict */
}

SEC("tc")
int kfunc_tc(struct __sk_buff *skb)
{
	probe();
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

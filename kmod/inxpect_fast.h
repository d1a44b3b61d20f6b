/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * inxpect: what the kfunc reads (inxpect_read.c) share with the rest of the
 * module (inxpect_core.c): the per-CPU cache they read, the way off their
 * fast path, and the kfuncs' prototypes.
 */
#ifndef INXPECT_FAST_H
#define INXPECT_FAST_H

#include <linux/btf.h>
#include <linux/percpu.h>
#include <linux/types.h>

#include "inxpect_arch.h"
#include "inxpect_uapi.h"

/* __bpf_kfunc appeared in 6.2; before that a kfunc only had to stay global and
 * not inlined for resolve_btfids and pahole to see it. */
#ifndef __bpf_kfunc
#define __bpf_kfunc __used noinline
#endif

/* What the kfuncs read, written only on its own CPU with IRQs off
 * (inxpect_core.c). */
struct inxpect_fast {
	int rdpmc[INXPECT_MAX_SLOTS]; /* -1: do not read */
	struct perf_event *event[INXPECT_MAX_SLOTS]; /* NULL: disarmed */
	u64 tag[INXPECT_MAX_SLOTS];
};
DECLARE_PER_CPU(struct inxpect_fast, inxpect_fast);

/* A read found the cache stale: queue its reload, return an invalid read. */
u64 inxpect_stale(void);

/*
 * The probes' own reads. Under IBT the compiler starts every global function
 * with endbr64, one more instruction inside each measurement; the JIT calls
 * kfuncs directly, never through a pointer, so they do not need it
 * (nocf_check is part of the type, hence on the prototypes too). The
 * prototypes also keep W=1 (-Wmissing-prototypes) quiet on every kernel;
 * newer ones offer __bpf_kfunc_start_defs() for the same purpose.
 */
#ifdef CONFIG_X86_KERNEL_IBT
#define __inxpect_direct __attribute__((nocf_check))
#else
#define __inxpect_direct
#endif
__inxpect_leaf __u64 inxpect_read_pmc(__u32 slot);
__u64 inxpect_read_tsc(void);
__inxpect_direct __inxpect_leaf __u64 inxpect_read_pmc0_lo(void);
__inxpect_direct __inxpect_leaf __u64 inxpect_read_pmc0_lo_end(void);
__inxpect_direct __u64 inxpect_read_tsc_lo(void);

#endif /* INXPECT_FAST_H */

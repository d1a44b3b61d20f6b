// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect: the kfuncs the probes call, every instruction of which is
 * measurement noise. This file is built without the kernel's
 * instrumentation (Kbuild: UBSAN, KASAN, KCSAN, KCOV, gcov off): a sanitizer
 * check or coverage hook would be a call inside a read (UBSAN_BOUNDS and
 * UBSAN_SHIFT repeat the reads' own bounds checks: Debian's 7.x arm64 has
 * both), which gives the read a stack frame, more noise, and on arm64 makes
 * the frameless tail branch to inxpect_stale wrong. The rest of the module
 * (inxpect_core.c) keeps whatever the kernel was built with.
 */
#include <linux/compiler.h>
#include <linux/percpu.h>
#include <linux/perf_event.h>

#include "inxpect_arch.h"
#include "inxpect_fast.h"
#include "inxpect_uapi.h"

/* Defined here, where the reads are: the compiler then addresses its fields
 * from one base (arm64: one adrp for all of them). The initializer is the
 * image copied to every CPU's area at module load. */
DEFINE_PER_CPU(struct inxpect_fast, inxpect_fast) = {
	.rdpmc = { -1, -1, -1, -1 },
};

/*
 * The kfuncs' per-CPU loads. A BPF program runs with migration disabled
 * (softirq for XDP and TC, migrate_disable() for BPF_PROG_TEST_RUN), so the
 * CPU cannot change under a kfunc and the preemption guard of
 * this_cpu_read() buys nothing. Where a per-CPU load is not one instruction
 * (arm64) and the kernel is preemptible (Debian's 7.x: PREEMPT_LAZY), that
 * guard is a preempt_count increment and decrement with a call to
 * preempt_schedule_notrace(): a stack frame in the reads, inside the
 * measurement, under INXPECT_ARCH_TAIL's frameless tail branch.
 */
#define inxpect_fast_read(field) raw_cpu_read(inxpect_fast.field)

/* Is the slot's event still on the counter the cache says, with the same
 * tag? Same CPU as perf's scheduling, which runs with IRQs off, so each load
 * sees either the old or the new assignment. */
static __always_inline bool inxpect_cached(unsigned int slot, int idx)
{
	struct perf_event *e = inxpect_fast_read(event[slot]);

	return READ_ONCE(e->state) == PERF_EVENT_STATE_ACTIVE &&
	       inxpect_arch_counter_is(e, idx) &&
	       inxpect_arch_tag(e) == inxpect_fast_read(tag[slot]);
}

/* `return inxpect_stale();` from the probes' reads. Where the arch has a
 * tail branch (arm64: the kernel's frame pointers turn sibling calls off, so
 * a call would give the read a stack frame, whose set-up and tear-down fall
 * inside the measurement), the read stays a leaf without a frame. */
#ifdef INXPECT_ARCH_TAIL
#define INXPECT_RETURN_STALE() INXPECT_ARCH_TAIL(inxpect_stale)
#else
#define INXPECT_RETURN_STALE() return inxpect_stale()
#endif

/*
 * notrace: no __fentry__ call, one instruction less and no ftrace hook inside
 * a measurement. The reads and their barriers (lfence, isb) are in
 * inxpect_arch.h. Both checks: the caller may use it for START or END.
 */
__bpf_kfunc notrace __inxpect_leaf __u64 inxpect_read_pmc(__u32 slot)
{
	u64 v;
	int idx;

	if (unlikely(slot >= INXPECT_MAX_SLOTS))
		return INXPECT_READ_INVALID;
	idx = inxpect_fast_read(rdpmc[slot]);
	if (unlikely(idx < 0))
		return INXPECT_READ_INVALID;
	if (unlikely(!inxpect_cached(slot, idx)))
		INXPECT_RETURN_STALE();
	/* The read is a compiler barrier: the check below reloads after it. */
	v = inxpect_arch_read_pmc(idx);
	if (unlikely(!inxpect_cached(slot, idx)))
		INXPECT_RETURN_STALE();
	return v;
}

__bpf_kfunc notrace __u64 inxpect_read_tsc(void)
{
	return inxpect_arch_read_tsc();
}

/*
 * The low 32 bits only, for the probes' deltas (taken mod 2^32; a region
 * would need over a second to wrap): rdpmc/rdtsc already zero bits 63:32 of
 * rax. Slot 0 is fixed, so no argument and no bounds check either.
 *
 * START (inxpect_read_pmc0_lo) validates before its read, so after the read
 * there is only the return; END (inxpect_read_pmc0_lo_end) loads the index,
 * reads, and validates after, outside the measurement. Between the two reads
 * of a region this leaves: `ret` after START's read, `mov/test/js/lfence`
 * before END's.
 */
__bpf_kfunc notrace __inxpect_direct __inxpect_leaf __u64 inxpect_read_pmc0_lo(void)
{
	int idx = inxpect_fast_read(rdpmc[0]);

	if (unlikely(idx < 0))
		return INXPECT_READ_INVALID;
	if (unlikely(!inxpect_cached(0, idx)))
		INXPECT_RETURN_STALE();
	return inxpect_arch_read_pmc_lo(idx);
}

/*
 * INXPECT_ARCH_PMC0_GUESS (arm64): the handle slot 0 almost always has (the
 * driver puts the first event that is not cycles on the first event
 * counter). END reads that counter first, before the per-CPU load of the
 * handle, so only the barrier is left in front of its read; when the handle
 * is another one, it reads again (a later, still valid value: noise on that
 * rare path only). Either way the checks follow the read.
 */
__bpf_kfunc notrace __inxpect_direct __inxpect_leaf __u64 inxpect_read_pmc0_lo_end(void)
{
	u64 lo;
	int idx;

#ifdef INXPECT_ARCH_PMC0_GUESS
	lo = inxpect_arch_read_pmc_lo_ordered(INXPECT_ARCH_PMC0_GUESS);
	idx = inxpect_fast_read(rdpmc[0]);
	if (unlikely(idx != INXPECT_ARCH_PMC0_GUESS)) {
		if (idx < 0)
			return INXPECT_READ_INVALID;
		lo = inxpect_arch_read_pmc_lo_ordered(idx);
	}
#else
	idx = inxpect_fast_read(rdpmc[0]);
	if (unlikely(idx < 0))
		return INXPECT_READ_INVALID;
	/* ordered: keeps the check's loads after the read. */
	lo = inxpect_arch_read_pmc_lo_ordered(idx);
#endif
	if (unlikely(!inxpect_cached(0, idx)))
		INXPECT_RETURN_STALE();
	return lo;
}

__bpf_kfunc notrace __inxpect_direct __u64 inxpect_read_tsc_lo(void)
{
	return inxpect_arch_read_tsc_lo();
}

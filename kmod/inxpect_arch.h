/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * inxpect: the architecture-specific half of the counter reads.
 *
 * inxpect_core.c keeps, per CPU and slot, one int that the fast path reads: the
 * "counter handle" of the slot's active event, or -1. This header says what
 * that int is and how the kfuncs turn it into a counter value:
 *
 *   inxpect_arch_counter(e)       slow path, on the event's CPU with IRQs off:
 *                                 the handle of an active, scheduled event
 *   inxpect_arch_counter_is(e, h) fast path: is e still on the counter h?
 *   inxpect_arch_tag(e)           a value that changes whenever perf
 *                                 (re)starts e on a counter
 *   inxpect_arch_read_pmc(h)      the raw counter (the PMU's width); a
 *                                 compiler barrier for memory after it
 *   inxpect_arch_read_pmc_lo(h)   its low 32 bits (_ordered: with that
 *                                 barrier, for checks that follow the read)
 *   inxpect_arch_read_tsc()       the free-running time counter
 *   inxpect_arch_read_tsc_lo()    its low 32 bits
 *   inxpect_arch_pmu_usable(pmu)  at load: can the reads use this core PMU?
 *
 * __inxpect_leaf marks the reads (arm64: no return-address signing).
 * Optional: INXPECT_ARCH_TAIL(fn) returns fn()'s value by a tail branch
 * (the caller must be a leaf without a frame); INXPECT_ARCH_PMC0_GUESS is
 * the handle slot 0 nearly always has, read before the handle is loaded.
 *
 * The reads only read: which slots are valid, and how an invalid read is
 * reported, is inxpect_read.c's business. Every instruction in them is
 * measurement noise, so they are always inlined and branch as little as the
 * architecture allows.
 */
#ifndef INXPECT_ARCH_H
#define INXPECT_ARCH_H

#include <linux/perf_event.h>
#include <linux/types.h>

#if defined(CONFIG_X86_64)

/* x86-64: the handle is perf's rdpmc index (event_base_rdpmc), which already
 * encodes fixed vs general counters. lfence: rdpmc/rdtsc are not ordered
 * with earlier instructions; without it the read may happen before the
 * measured code ends. */
#define INXPECT_ARCH_NAME "x86-64"

static inline int inxpect_arch_counter(struct perf_event *e)
{
	return e->hw.idx >= 0 ? e->hw.event_base_rdpmc : -1;
}

static __always_inline bool inxpect_arch_counter_is(struct perf_event *e, int h)
{
	return READ_ONCE(e->hw.event_base_rdpmc) == h;
}

/* x86 perf bumps last_tag each time it assigns the event a counter. */
static __always_inline u64 inxpect_arch_tag(struct perf_event *e)
{
	return READ_ONCE(e->hw.last_tag);
}

static __always_inline u64 inxpect_arch_read_pmc(int h)
{
	u64 lo, hi; /* rdpmc clears bits 63:32 of rax and rdx */

	asm volatile("lfence; rdpmc" : "=a"(lo), "=d"(hi) : "c"(h) : "memory");
	return (hi << 32) | lo;
}

/* rdpmc already zeroes bits 63:32 of rax: nothing after the read. */
static __always_inline u64 inxpect_arch_read_pmc_lo(int h)
{
	u64 lo;

	asm volatile("lfence; rdpmc" : "=a"(lo) : "c"(h) : "rdx");
	return lo;
}

static __always_inline u64 inxpect_arch_read_pmc_lo_ordered(int h)
{
	u64 lo;

	asm volatile("lfence; rdpmc" : "=a"(lo) : "c"(h) : "rdx", "memory");
	return lo;
}

static __always_inline u64 inxpect_arch_read_tsc(void)
{
	u64 lo, hi;

	asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
	return (hi << 32) | lo;
}

static __always_inline u64 inxpect_arch_read_tsc_lo(void)
{
	u64 lo;

	asm volatile("lfence; rdtsc" : "=a"(lo) : : "rdx");
	return lo;
}

static inline bool inxpect_arch_pmu_usable(struct pmu *pmu)
{
	return true;
}

#define __inxpect_leaf

#elif defined(CONFIG_ARM64)

/*
 * arm64 (PMUv3, programmed by the kernel's armv8_pmuv3 perf driver).
 *
 * The handle is the PMU counter register, independent of the kernel's
 * numbering: bits 7:0 are 0..30 for PMEVCNTR<n>_EL0, 31 for PMCCNTR_EL0 (the
 * cycle counter), 32 for PMICNTR_EL0 (FEAT_PMUv3_ICNTR's instruction
 * counter); INXPECT_ARM64_CHAINED says the event is a chained pair whose
 * high half is in the next counter up; INXPECT_ARM64_WIDE that it is a
 * 64-bit event (ARMPMU_EVT_64BIT). Every other event is 32 bits wide, and
 * its register may hold more: on PMUv3p5 and on the cycle counter the driver
 * biases a 32-bit event by 0xffffffff00000000 (so that its overflow
 * interrupt comes at 2^32), which the read masks off, also because bit 63
 * of a read is inxpect's "invalid".
 *
 * event->hw.idx is the driver's index, and its meaning changed with the
 * "remove event index to counter remapping" rework (Linux 6.11), which also
 * introduced ARMV8_PMU_CYCLE_IDX in <linux/perf/arm_pmuv3.h>:
 *   since 6.11: idx 0..30 = PMEVCNTR<idx>, 31 = PMCCNTR, 32 = PMICNTR;
 *   before:     idx 0 = PMCCNTR, idx n >= 1 = PMEVCNTR<n-1> (6.1 here).
 * The macro's presence tells the two apart (checked on Debian's 6.1 and
 * 6.12 arm64 kernels).
 *
 * Chaining: a 64-bit event (attr.config1 bit 0, "long") on a PMU older than
 * PMUv3p5 (32-bit event counters) gets two adjacent counters; the driver
 * puts hw.idx on the odd (high) one and counts the carry of the even one
 * below it. PMUv3p5 counters are 64 bits wide and never chained; the cycle
 * and instruction counters are 64 bits on every version.
 *
 * Barrier: an MRS of a PMU counter is not ordered with the instructions
 * before it. On an out-of-order core it may execute while earlier
 * instructions are still in flight, so a read that should end a region can
 * miss the region's tail (and a START read can include instructions that
 * precede it). ISB is a context synchronization event: everything before it
 * completes before the MRS executes, which is what x86's lfence gives
 * rdpmc. It is one instruction in the count (QEMU's PMU counts it like any
 * other, so the VM tests see it), and it is the same pattern the kernel
 * uses to read the generic timer. QEMU's TCG does not reorder, so the VM
 * tests cannot tell whether the barrier is needed, only that it is counted.
 *
 * "tsc" on arm64 is CNTVCT_EL0, the generic timer's virtual count (what
 * user space and the vDSO read): a constant rate of CNTFRQ_EL0 ticks per
 * second, not CPU cycles. It needs the same ISB. Errata workarounds that
 * the kernel's arch_timer applies on a few old cores (unstable low bits) are
 * not applied here.
 */
#define INXPECT_ARCH_NAME "arm64"

#include <linux/perf/arm_pmu.h>
#if __has_include(<linux/perf/arm_pmuv3.h>)
#include <linux/perf/arm_pmuv3.h>
#endif

#define INXPECT_ARM64_PMCCNTR 31
#define INXPECT_ARM64_PMICNTR 32
#define INXPECT_ARM64_COUNTER_MASK 0xff
#define INXPECT_ARM64_CHAINED 0x100
#define INXPECT_ARM64_WIDE 0x200
#define INXPECT_ARM64_PMUVER_V3P5 6 /* ID_AA64DFR0_EL1.PMUVer, Armv8.5 */

/* The handle of e if the driver has it at index idx. */
static __always_inline int inxpect_arm64_counter_at(struct perf_event *e, int idx)
{
	struct arm_pmu *pmu = to_arm_pmu(e->pmu);
	int c;

	if (idx < 0)
		return -1;
#ifdef ARMV8_PMU_CYCLE_IDX
	c = idx; /* the counter number itself */
#else
	c = idx == 0 ? INXPECT_ARM64_PMCCNTR : idx - 1;
#endif
	if (c > INXPECT_ARM64_PMICNTR)
		return -1;
	/* As the driver decides (armv8pmu_event_is_chained): a long event on
	 * a 32-bit event counter, not read by user space. pmuver 0xf is
	 * IMPLEMENTATION DEFINED, not a version. */
	if (c < INXPECT_ARM64_PMCCNTR && (e->attr.config1 & 1) &&
	    !(e->hw.flags & PERF_EVENT_FLAG_USER_READ_CNT) &&
	    (pmu->pmuver < INXPECT_ARM64_PMUVER_V3P5 || pmu->pmuver == 0xf)) {
		if (c == 0)
			return -1; /* cannot happen: the high half is odd */
		return (c - 1) | INXPECT_ARM64_CHAINED | INXPECT_ARM64_WIDE;
	}
	return (e->hw.flags & ARMPMU_EVT_64BIT) ? c | INXPECT_ARM64_WIDE : c;
}

static inline int inxpect_arch_counter(struct perf_event *e)
{
	return inxpect_arm64_counter_at(e, e->hw.idx);
}

static __always_inline bool inxpect_arch_counter_is(struct perf_event *e, int h)
{
	return inxpect_arm64_counter_at(e, READ_ONCE(e->hw.idx)) == h;
}

/*
 * arm64 perf keeps no assignment tag (last_tag is x86's). Every start of
 * the event on a counter (armpmu_start -> armpmu_event_set_period) sets
 * hw.prev_count afresh and writes the counter, and every update (stop,
 * overflow interrupt) moves prev_count to the current count: it changes
 * whenever perf touches the event, which is what the tag must tell.
 */
static __always_inline u64 inxpect_arch_tag(struct perf_event *e)
{
	return local64_read(&e->hw.prev_count);
}

#define INXPECT_ARM64_MRS(reg)                                          \
	({                                                              \
		u64 __v;                                                \
		asm volatile("isb\n\tmrs %0, " reg : "=r"(__v) : : "memory"); \
		__v;                                                    \
	})

#define INXPECT_ARM64_EVCNTR(n) \
	case n:                 \
		return INXPECT_ARM64_MRS("pmevcntr" #n "_el0")

/* Counter number c (0..32) -> its register. The MRS encodes the register,
 * so this is a switch; callers test the likely counters first. */
static __always_inline u64 inxpect_arm64_read_counter(unsigned int c)
{
	switch (c) {
	INXPECT_ARM64_EVCNTR(0); INXPECT_ARM64_EVCNTR(1);
	INXPECT_ARM64_EVCNTR(2); INXPECT_ARM64_EVCNTR(3);
	INXPECT_ARM64_EVCNTR(4); INXPECT_ARM64_EVCNTR(5);
	INXPECT_ARM64_EVCNTR(6); INXPECT_ARM64_EVCNTR(7);
	INXPECT_ARM64_EVCNTR(8); INXPECT_ARM64_EVCNTR(9);
	INXPECT_ARM64_EVCNTR(10); INXPECT_ARM64_EVCNTR(11);
	INXPECT_ARM64_EVCNTR(12); INXPECT_ARM64_EVCNTR(13);
	INXPECT_ARM64_EVCNTR(14); INXPECT_ARM64_EVCNTR(15);
	INXPECT_ARM64_EVCNTR(16); INXPECT_ARM64_EVCNTR(17);
	INXPECT_ARM64_EVCNTR(18); INXPECT_ARM64_EVCNTR(19);
	INXPECT_ARM64_EVCNTR(20); INXPECT_ARM64_EVCNTR(21);
	INXPECT_ARM64_EVCNTR(22); INXPECT_ARM64_EVCNTR(23);
	INXPECT_ARM64_EVCNTR(24); INXPECT_ARM64_EVCNTR(25);
	INXPECT_ARM64_EVCNTR(26); INXPECT_ARM64_EVCNTR(27);
	INXPECT_ARM64_EVCNTR(28); INXPECT_ARM64_EVCNTR(29);
	INXPECT_ARM64_EVCNTR(30);
	case INXPECT_ARM64_PMCCNTR:
		return INXPECT_ARM64_MRS("pmccntr_el0");
	case INXPECT_ARM64_PMICNTR:
		/* PMICNTR_EL0 by encoding: older assemblers lack the name. */
		return INXPECT_ARM64_MRS("s3_3_c9_c4_0");
	}
	return 0;
}

static __always_inline u64 inxpect_arch_read_pmc(int h)
{
	unsigned int c = h & INXPECT_ARM64_COUNTER_MASK;
	u64 hi, lo, hi2;

	if (likely(!(h & INXPECT_ARM64_WIDE)))
		return (u32)inxpect_arm64_read_counter(c);
	/* A 64-bit event starts at 2^63 + 1 (armpmu_event_set_period: -left,
	 * left = max_period / 2), so bit 63, inxpect's "invalid", is set on
	 * every read: it is masked off. The probes take deltas mod 2^32, so
	 * a count mod 2^63 loses nothing. */
	if (!(h & INXPECT_ARM64_CHAINED))
		return inxpect_arm64_read_counter(c) & ~BIT_ULL(63);
	/* Chained: high, low, high again, so a carry between the two reads
	 * is not taken for a wrap of 2^32 counts. */
	hi = inxpect_arm64_read_counter(c + 1);
	lo = inxpect_arm64_read_counter(c);
	hi2 = inxpect_arm64_read_counter(c + 1);
	if (unlikely(hi2 != hi))
		lo = inxpect_arm64_read_counter(c);
	return ((hi2 << 32) | (u32)lo) & ~BIT_ULL(63);
}

/* The low 32 bits: a chained pair's low half is the lower counter alone,
 * so the handle's counter number is all it needs. Counter 0 (the first
 * event counter, where the driver puts the first non-cycles event) and the
 * cycle counter are tested before the general switch. */
static __always_inline u64 inxpect_arch_read_pmc_lo(int h)
{
	if (likely(h == 0))
		return (u32)INXPECT_ARM64_MRS("pmevcntr0_el0");
	if (h == INXPECT_ARM64_PMCCNTR)
		return (u32)INXPECT_ARM64_MRS("pmccntr_el0");
	return (u32)inxpect_arm64_read_counter(h & INXPECT_ARM64_COUNTER_MASK);
}

/* Every arm64 read is a compiler barrier already. */
static __always_inline u64 inxpect_arch_read_pmc_lo_ordered(int h)
{
	return inxpect_arch_read_pmc_lo(h);
}

/*
 * The probes' reads as frameless leaves. With CONFIG_FRAME_POINTER (always
 * on arm64) the kernel builds with -fno-optimize-sibling-calls, so a
 * `return inxpect_stale();` makes the read a non-leaf: paciasp, stp x29/x30,
 * mov x29 before the read and ldp/autiasp after it, inside the region (5 of
 * the 17 kernel instructions an empty region counted). A leaf needs no
 * frame; this branch is the sibling call the compiler would emit: fn
 * returns to our caller, with our sp and x30 untouched (tests/vm/run.sh
 * checks the built module: no frame in the two reads).
 */
/*
 * Return-address signing is off in these leaves: 6.1 builds with
 * -mbranch-protection=pac-ret+leaf, which signs x30 in every function, also
 * in front of the read (one instruction more in the region) and before the
 * tail branch (inxpect_stale would return to the signed address). A leaf
 * never stores x30, so signing protects nothing there. BTI landing pads stay
 * where the kernel uses them (the JIT calls kfuncs with blr).
 */
#ifdef CONFIG_ARM64_BTI_KERNEL
#define __inxpect_leaf __attribute__((target("branch-protection=bti")))
#else
#define __inxpect_leaf __attribute__((target("branch-protection=none")))
#endif

#define INXPECT_ARCH_TAIL(fn)                          \
	do {                                           \
		asm volatile("b " #fn ::: "memory");   \
		__builtin_unreachable();               \
	} while (0)

/* PMEVCNTR0_EL0, 32-bit event: where the driver puts slot 0's instructions
 * event (its first event that is not cycles). */
#define INXPECT_ARCH_PMC0_GUESS 0

/*
 * END reads PMEVCNTR0_EL0 before it knows the handle
 * (INXPECT_ARCH_PMC0_GUESS): that register must exist, i.e. the PMU must
 * have at least one event counter (PMCR_EL0.N >= 1; with N = 0 only the
 * cycle counter exists and the read is UNDEFINED). Read on the loading CPU;
 * a PMU without event counters is not used (SET_EVENTS: ENODEV).
 */
static inline bool inxpect_arch_pmu_usable(struct pmu *pmu)
{
	u64 n = (read_sysreg(pmcr_el0) >> 11) & 0x1f;

	if (!n)
		pr_info("%s: no PMU event counters (PMCR_EL0.N = 0): pmc unavailable\n",
			pmu->name);
	return n != 0;
}

static __always_inline u64 inxpect_arch_read_tsc(void)
{
	return INXPECT_ARM64_MRS("cntvct_el0");
}

static __always_inline u64 inxpect_arch_read_tsc_lo(void)
{
	return (u32)INXPECT_ARM64_MRS("cntvct_el0");
}

#else
#error "inxpect reads counters on x86-64 (rdpmc/rdtsc) and arm64 (PMUv3/CNTVCT) only"
#endif

#endif /* INXPECT_ARCH_H */

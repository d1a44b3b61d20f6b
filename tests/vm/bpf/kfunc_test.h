/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Shared by kfunc_test.bpf.c and the guest program: the program's .bss. */
#ifndef INXPECT_KFUNC_TEST_H
#define INXPECT_KFUNC_TEST_H

#define KT_SLOTS 5 /* the module's 4 slots plus one out of range */
#define KT_INVALID (1ULL << 63) /* INXPECT_READ_INVALID */

struct kfunc_result {
	__u64 runs; /* program runs */
	__u64 present; /* runs that saw both kfuncs (bpf_ksym_exists) */
	__u64 tsc_first; /* last pair of inxpect_read_tsc() values */
	__u64 tsc_second;
	__u64 tsc_not_increasing; /* runs where second <= first */
	__u64 pmc[KT_SLOTS]; /* last inxpect_read_pmc(slot) */
	__u64 pmc_valid[KT_SLOTS]; /* runs where bit 63 was clear */
	/* The probes' `_lo` kfuncs: low 32 bits only. */
	__u64 tsc_lo_bad; /* runs where a value had bits above 31 or the delta mod 2^32 was 0 */
	__u64 tsc_lo_delta; /* last (u32)(second - first) */
	__u64 pmc0_lo; /* last inxpect_read_pmc0_lo() (START) */
	__u64 pmc0_lo_end; /* last inxpect_read_pmc0_lo_end() (END) */
	__u64 pmc0_lo_valid; /* runs where both had bit 63 clear */
	__u64 pmc0_lo_bad; /* runs where one was neither < 2^32 nor exactly invalid */
	/* For a clock coarser than an instruction (arm64's generic timer at
	 * 62.5 MHz on Cortex-A72, 16 instructions a tick under icount): */
	__u64 tsc_back; /* runs where second < first */
	__u64 tsc_start; /* the first run's first value */
	__u64 tsc_lo_same; /* runs where the `_lo` delta was 0 */
};

#endif

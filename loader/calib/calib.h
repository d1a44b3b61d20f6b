/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by the calibration programs (empty.bpf.c, nest.bpf.c). */
#ifndef __INXPECT_CALIB_H
#define __INXPECT_CALIB_H

/* Four values live from BUSY_BEGIN to BUSY_END, in the four callee-saved
 * registers (BUSY_END clobbers R0-R5 before it reads them): no register is
 * dead at the sites between, so a START fills the per-CPU pointer again
 * after its read (in a subprogram: calls the runtime to read). */
#define BUSY_BEGIN                                      \
	__u64 a, b, c, d;                               \
	asm volatile("%0 = 1\n%1 = 2\n%2 = 3\n%3 = 4" \
		     : "=r"(a), "=r"(b), "=r"(c), "=r"(d))
#define BUSY_END                                                        \
	asm volatile("" ::: "r0", "r1", "r2", "r3", "r4", "r5");        \
	asm volatile("%0 += %1\n%0 += %2\n%0 += %3" : "+r"(a) : "r"(b), "r"(c), "r"(d))

/* 64 regions (put them where they never run), so that the regions after
 * them are past the run mask (regions 0-63), whose sites test the sampling
 * themselves. */
#define FILL(n) INXPECT_START(fill_##n); INXPECT_END(fill_##n);
#define FILL8(a) FILL(a##0) FILL(a##1) FILL(a##2) FILL(a##3) \
	FILL(a##4) FILL(a##5) FILL(a##6) FILL(a##7)
#define FILL64 FILL8(0) FILL8(1) FILL8(2) FILL8(3) FILL8(4) FILL8(5) FILL8(6) FILL8(7)
/* 16 more (other names), so that the regions after them are past the
 * first 16, whose END keeps its statistics in the per-CPU state (no
 * look-up of inxpect_stats). */
#define FILL16 FILL8(8) FILL8(9)

#endif

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Calibration program: empty regions. `inxpect` instruments it with the
 * same counter as the program being measured; a region's minimum is the
 * cost of the probes themselves (the instructions between START's counter
 * read and END's), which the reports subtract as the calibration offset.
 * `empty` is in the program's own code, `empty_sub` in a subprogram, where
 * END looks up the per-CPU state before it reads, each again with no
 * register free at START (`_busy`), and `empty_word` past the 64 regions of
 * the run mask: a region is calibrated with the one whose sites have probes
 * of its own shape (the manifest's `window` of each site).
 *
 * Rebuild (committed as empty.bpf.o, so the loader needs no compiler):
 *   clang -O2 -g -target bpf -I../../runtime-bpf/include \
 *         -I/usr/include/x86_64-linux-gnu -c empty.bpf.c -o empty.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"
#include "calib.h"

static __noinline int empty_sub(void)
{
	int r;

	INXPECT_START(empty_sub);
	INXPECT_END(empty_sub);
	/* A result the compiler cannot fold into the caller. */
	asm volatile("%0 = 0" : "=r"(r));
	return r;
}

static __noinline int empty_sub_busy(void)
{
	int r;

	BUSY_BEGIN;
	INXPECT_START(empty_sub_busy);
	INXPECT_END(empty_sub_busy);
	BUSY_END;
	asm volatile("%0 = 0" : "=r"(r));
	return r;
}

SEC("xdp")
int xdp_empty(struct xdp_md *ctx)
{
	(void)ctx;
	INXPECT_START(empty);
	INXPECT_END(empty);
	BUSY_BEGIN;
	INXPECT_START(empty_busy);
	INXPECT_END(empty_busy);
	BUSY_END;
	return XDP_PASS + empty_sub() + empty_sub_busy();
}

/* Regions that never run, so that xdp_word's are past the run mask. The
 * loader runs xdp_empty and xdp_word. */
SEC("xdp")
int xdp_fill(struct xdp_md *ctx)
{
	if (ctx->ingress_ifindex == 0xfffffff0) {
		FILL64
	}
	return XDP_PASS;
}

SEC("xdp")
int xdp_word(struct xdp_md *ctx)
{
	INXPECT_START(empty_word);
	INXPECT_END(empty_word);
	BUSY_BEGIN;
	INXPECT_START(empty_word_busy);
	INXPECT_END(empty_word_busy);
	BUSY_END;
	return XDP_PASS;
}

/* GPL-compatible: the tsc, pmc and perf counters call GPL-only kfuncs/helpers. */
char _license[] SEC("license") = "Dual BSD/GPL";

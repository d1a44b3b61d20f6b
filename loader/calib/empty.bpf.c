// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Calibration program: one empty region. `inxpect` instruments it with the
 * same counter as the program being measured; its mean is the cost of the
 * probes themselves (the instructions between START's counter read and
 * END's), which the reports subtract as the calibration offset.
 *
 * Rebuild (committed as empty.bpf.o, so the loader needs no compiler):
 *   clang -O2 -g -target bpf -I../../runtime-bpf/include \
 *         -I/usr/include/x86_64-linux-gnu -c empty.bpf.c -o empty.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

SEC("xdp")
int xdp_empty(struct xdp_md *ctx)
{
	INXPECT_START(empty);
	INXPECT_END(empty);
	return XDP_PASS;
}

/* GPL-compatible: the tsc, pmc and perf counters call GPL-only kfuncs/helpers. */
char _license[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Drives the probe runtime's END statistics with chosen values (the
 * percentile test, tests/tests/histogram.rs). Linked with the real runtime
 * object (ktime): each frame carries a region id and up to DRIVE_MAX deltas,
 * each handed to __inxpect_record as `start + delta` and `start`, which is
 * what every program-level END site calls once it found its START held:
 * the runtime's own invalid-read check, sum, min, max and histogram.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect_runtime.h"

#define DRIVE_MAX 64
/* A start value far from 0 so `start + delta` exercises the subtraction. */
#define START 1000000007ULL

extern int __inxpect_record(__u32 id, __u64 now, __u64 then);

struct frame {
	__u32 id;
	__u32 n;
	__u64 delta[DRIVE_MAX];
};

SEC("xdp")
int drive(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct frame *f = data;
	__u32 id, n, i;

	if ((void *)(f + 1) > data_end)
		return XDP_ABORTED;
	id = f->id & (INXPECT_MAX_REGIONS - 1);
	n = f->n;
	for (i = 0; i < DRIVE_MAX && i < n; i++)
		__inxpect_record(id, START + f->delta[i], START);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Drives the probe runtime's END statistics with chosen values (the
 * percentile test, tests/tests/histogram.rs). Linked with the real runtime
 * object (ktime): each frame carries a region id and up to DRIVE_MAX deltas;
 * for each, the program does what the probes do around a measurement -- a
 * fresh sampled run (the entry probe's `runs++; cur = runs`), START's
 * bookkeeping (__inxpect_start_prep) and its stored read (`held.val`), then
 * END's __inxpect_end_value with `start + delta` -- so every delta goes
 * through the runtime's own checks, sum, min, max and histogram.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect_runtime.h"

#define DRIVE_MAX 64
/* A start value far from 0 so `start + delta` exercises the subtraction. */
#define START 1000000007ULL

extern int __inxpect_start_prep(__u32 id);
extern int __inxpect_end_value(__u32 id, __u64 now0);

/* The runtime's map, resolved by the linker. */
extern struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inxpect_pcpu);
} inxpect_pcpu SEC(".maps");

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
	__u32 zero = 0, id, n, i;
	struct inxpect_pcpu *p;

	if ((void *)(f + 1) > data_end)
		return XDP_ABORTED;
	id = f->id & (INXPECT_MAX_REGIONS - 1);
	n = f->n;
	for (i = 0; i < DRIVE_MAX && i < n; i++) {
		p = bpf_map_lookup_elem(&inxpect_pcpu, &zero);
		if (!p)
			return XDP_ABORTED;
		p->runs++;
		p->cur = p->runs;
		if (!__inxpect_start_prep(id))
			return XDP_PASS;
		p->held[id].val[0] = START;
		__inxpect_end_value(id, START + f->delta[i]);
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

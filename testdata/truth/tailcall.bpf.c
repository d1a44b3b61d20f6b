/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A tail call into another program of the object through a PROG_ARRAY
 * initialised statically; slot 1 stays empty, so some calls fail.
 *
 * Semantics under test: a run is one packet (tc_leaf, entered by tail call,
 * counts no run); a region open at a successful tail call ends there, a
 * failed one goes on measuring; in --functions a tail call ends the
 * caller's region. So `pre` is counted before the tail call and un-counted
 * when it returns (failed): the END further on counts it then.
 */
#include "truth.h"

struct truth {
	__u64 runs, f_tc_entry, f_tc_leaf, r_pre__tc_entry, r_post__tc_entry,
		r_leaf__tc_leaf;
} truth SEC(".data.truth");

SEC("xdp")
int tc_leaf(struct xdp_md *ctx)
{
	int b;

	TRUTH_BUMP(f_tc_leaf);
	INXPECT_START(leaf);
	b = frame_byte(ctx, 15);
	if (b < 0) {
		TRUTH_END(leaf, tc_leaf);
		return XDP_ABORTED;
	}
	TRUTH_END(leaf, tc_leaf);
	return b & 1 ? XDP_DROP : XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int(void *));
} tc_jmp SEC(".maps") = {
	.values = { [0] = (void *)&tc_leaf },
};

SEC("xdp")
int tc_entry(struct xdp_md *ctx)
{
	int a;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_tc_entry);
	INXPECT_START(pre);
	a = frame_byte(ctx, 14);
	if (a < 0) {
		TRUTH_END(pre, tc_entry);
		return XDP_PASS;
	}
	if (a & 1) {
		/* Counted if the tail call succeeds (it does not return). */
		TRUTH_BUMP(r_pre__tc_entry);
		bpf_tail_call(ctx, &tc_jmp, (a >> 1) & 1);
		truth.r_pre__tc_entry--;
	}
	TRUTH_END(pre, tc_entry);
	INXPECT_START(post);
	if (a & 4) {
		TRUTH_END(post, tc_entry);
		return XDP_DROP;
	}
	TRUTH_END(post, tc_entry);
	return XDP_PASS;
}

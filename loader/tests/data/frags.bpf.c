// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test input: an XDP program with frags support (section "xdp.frags"), so
 * BPF_PROG_TEST_RUN hands it frames longer than one buffer; one region.
 * Returns XDP_DROP when the whole frame is in the linear buffer, XDP_PASS
 * when part of it is in fragments. Built like loader/calib/empty.bpf.c. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

SEC("xdp.frags")
int xdp_frags(struct xdp_md *ctx)
{
	int verdict;

	INXPECT_START(len);
	verdict = bpf_xdp_get_buff_len(ctx) >
			  (__u64)(ctx->data_end - ctx->data) ? XDP_PASS : XDP_DROP;
	INXPECT_END(len);
	return verdict;
}

char _license[] SEC("license") = "Dual BSD/GPL";

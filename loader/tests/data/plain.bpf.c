// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test input: an XDP program without region markers (NothingToDo unless
 * --functions). Built like loader/calib/empty.bpf.c. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_plain(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";

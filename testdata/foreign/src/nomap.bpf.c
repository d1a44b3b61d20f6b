/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* No maps and no globals: the one shape that loads even without BTF, so
 * the no-BTF build isolates what the rewriter does without .BTF. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int parity(unsigned char *d, unsigned char *end)
{
	int p = 0;
	for (int i = 0; i < 16 && d + i + 1 <= end; i++)
		p ^= d[i];
	return p & 1;
}

SEC("xdp")
int nomap(struct xdp_md *ctx)
{
	unsigned char *d = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	return parity(d, end) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

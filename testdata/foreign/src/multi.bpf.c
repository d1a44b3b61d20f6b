/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Four XDP programs and a tc program in one object, sharing a global
 * (non-static, separately verified) function and a static one. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline)) int classify(__u32 len)
{
	if (len < 64)
		return XDP_DROP;
	if (len > 1000)
		return XDP_TX;
	return XDP_PASS;
}

static __attribute__((noinline)) int first_byte(struct xdp_md *ctx)
{
	unsigned char *d = (void *)(long)ctx->data;
	if (d + 1 > (unsigned char *)(long)ctx->data_end)
		return -1;
	return d[0];
}

SEC("xdp")
int by_len(struct xdp_md *ctx)
{
	return classify(ctx->data_end - ctx->data);
}

SEC("xdp")
int by_byte(struct xdp_md *ctx)
{
	int b = first_byte(ctx);
	return b < 0 ? XDP_ABORTED : (b & 1 ? XDP_PASS : XDP_DROP);
}

SEC("xdp")
int always_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int both(struct xdp_md *ctx)
{
	int b = first_byte(ctx);
	if (b < 0)
		return XDP_ABORTED;
	return b & 1 ? classify(ctx->data_end - ctx->data) : XDP_DROP;
}

SEC("tc")
int tc_len(struct __sk_buff *skb)
{
	return skb->len > 100 ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

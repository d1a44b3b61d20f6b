/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* CO-RE relocations in an XDP program: field offsets through
 * __builtin_preserve_access_index and bpf_core_field_exists on kernel
 * types, so .BTF.ext carries core_relo records to remap. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* A local mirror of the kernel's struct (CO-RE matches by name). */
struct xdp_md___local {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
} __attribute__((preserve_access_index));

struct ethhdr___x {
	unsigned char h_dest[6];
	unsigned char h_source[6];
	unsigned short h_proto;
} __attribute__((preserve_access_index));

SEC("xdp")
int core(struct xdp_md *ctx)
{
	struct xdp_md___local *c = (void *)ctx;
	unsigned char *data = (void *)(long)c->data;
	unsigned char *end = (void *)(long)c->data_end;
	struct ethhdr___x *eth = (void *)data;
	int r = XDP_PASS;

	if ((void *)(eth + 1) > (void *)end)
		return XDP_ABORTED;
	if (bpf_core_field_exists(c->rx_queue_index))
		r = eth->h_proto == 0x0008 ? XDP_PASS : XDP_DROP;
	if (bpf_core_field_exists(eth->h_source))
		eth->h_dest[0] ^= eth->h_source[5];
	return r;
}

char LICENSE[] SEC("license") = "GPL";

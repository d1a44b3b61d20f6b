/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The shape that loads without any BTF: state in global data only (.bss,
 * .data, .rodata, which libbpf turns into maps without BTF), no helpers,
 * a static subprogram, a global one taking packet pointers (verified
 * inline, as an object without BTF always is: verified on its own it
 * would be refused), a bounded loop and two regions. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

__u64 hits[4];
__u32 seed = 0x9e3779b1u;

static __attribute__((noinline)) __u32 mix(__u32 x)
{
	INXPECT_START(mix);
	x ^= x >> 7;
	x *= seed;
	INXPECT_END(mix);
	return x;
}

__attribute__((noinline)) int weigh(unsigned char *d, unsigned char *end)
{
	int acc = 0;

	for (int i = 0; i < 16; i++) {
		if (d + i + 1 > end)
			break;
		acc += d[i] * (seed >> (i & 7) | 1);
	}
	return acc;
}

SEC("xdp")
int globals(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	int acc;
	__u32 h;

	INXPECT_START(sum);
	acc = weigh(data, end);
	INXPECT_END(sum);
	h = mix(acc);
	hits[h & 3] += 1;
	if (data + 1 <= end)
		data[0] = (unsigned char)h;
	return h & 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

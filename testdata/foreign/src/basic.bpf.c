/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* One XDP program with a BTF-defined map, a static subprogram, a bounded
 * loop and two regions; built by ../build.sh with many compilers/flags. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __attribute__((noinline)) __u32 mix(__u32 x)
{
	INXPECT_START(mix);
	x ^= x >> 7;
	x *= 0x9e3779b1u;
	INXPECT_END(mix);
	return x;
}

SEC("xdp")
int basic(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u32 acc = 0, key;
	__u64 *v;

	INXPECT_START(sum);
	for (int i = 0; i < 32; i++) {
		if (data + i + 1 > end)
			break;
		acc += data[i];
	}
	INXPECT_END(sum);
	key = mix(acc) & 3;
	v = bpf_map_lookup_elem(&hits, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	if (data + 1 <= end)
		data[0] = (unsigned char)acc;
	return acc & 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

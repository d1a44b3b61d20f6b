#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");

static __attribute__((noinline)) __u64 sub(__u64 v0, __u64 v1)
{
	__u64 v2 = 3, v3 = 5, v4 = 7, v5 = 11;
	__u64 buf[4] = {};
	for (int i1 = 0; i1 < 7; i1++) {
		v0 += i1 * 12;
		v5 = v3 << (v2 & 63);
		v5 = (__u64)(__u32)v3 * 0x9e3779b1u;
		INXPECT_START(r0);
		if (v3 != v1) {
			v5 = v1 & v1;
		} else {
			v0 = (__u64)(__u32)v4 * 0x9e3779b1u;
		}
		INXPECT_START(r1);
		v3 = (__u64)(__u32)v3 * 0x9e3779b1u;
		INXPECT_START(r2);
		INXPECT_START(r3);
		if (v4 > v0) {
			v0 = v1 + v5;
			v5 = (__u64)(__u32)v2 * 0x9e3779b1u;
		} else {
			v3 = v0 & v0;
			v4 = (v1 >> 3) + 800816;
			v0 = v5 + v2;
		}
		INXPECT_START(r4);
		INXPECT_START(r5);
		INXPECT_START(r6);
		v0 = v2 | 83325;
		INXPECT_END(r6);
		INXPECT_END(r5);
		v1 = v3 | 242037;
		INXPECT_END(r4);
		INXPECT_END(r3);
		v4 = v4 & v4;
		INXPECT_END(r2);
		INXPECT_END(r1);
		for (int i2 = 0; i2 < 7; i2++) {
			v0 += i2 * 11;
			v5 = v3 << (v5 & 63);
			v0 = v3 | 236640;
		}
		INXPECT_END(r0);
	}
	INXPECT_START(r7);
	v4 = v4 * v0;
	if (v3 < v5) {
		v1 = v0 - 1020987;
		v4 = (__u64)(__u32)v3 * 0x9e3779b1u;
	}
	if (v1 < v0) {
		v5 = (v5 >> 3) + 422508;
		v1 = v2 & v4;
		v5 = v0 ^ (v4 >> 52);
	}
	INXPECT_END(r7);
	return v0 ^ v1 ^ v2 ^ v3 ^ v4 ^ v5 ^ buf[1];
}

SEC("xdp")
int prog(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u64 buf[4] = {};
	if (data + 64 > end)
		return XDP_ABORTED;
	__u64 v0 = data[56];
	__u64 v1 = data[1];
	__u64 v2 = data[51];
	__u64 v3 = data[61];
	__u64 v4 = data[3];
	__u64 v5 = data[14];
	INXPECT_START(r8);
	buf[1] = v5;
	v3 += buf[(v3 + 1) & 3];
	v3 = v0 + v3;
	INXPECT_END(r8);
	if (v1 >= v5) {
		v0 = sub(v5, v3);
	}
	v4 = sub(v4, v0);
	{
		__u32 k = v2 & 7;
		__u64 *p = bpf_map_lookup_elem(&m, &k);
		if (p) { *p += v0; v1 ^= *p; }
	}
	v0 ^= sub(v1, v2);
	data[8] = (unsigned char)v0;
	data[9] = (unsigned char)v1;
	data[10] = (unsigned char)v2;
	data[11] = (unsigned char)v3;
	data[12] = (unsigned char)v4;
	data[13] = (unsigned char)v5;
	return (int)((v0 ^ v1 ^ v2 ^ v3 ^ v4 ^ v5 ^ buf[2]) & 3);
}

char LICENSE[] SEC("license") = "GPL";
